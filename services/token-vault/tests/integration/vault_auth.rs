//! token-vault logs in to Vault as its Kubernetes ServiceAccount, under the least-privilege
//! policy `deploy/vault/setup.sh` installs, keeps its Vault token renewed, logs in again (reading
//! the token file anew) once the token reaches its max TTL, and is not ready while it holds no
//! valid token; and renews a renewable static token (`VAULT_TOKEN`) before it expires.
//!
//! There is no Kubernetes API server here, and Vault's `kubernetes` auth method asks one to
//! review each token (TokenReview). The stand-in is Vault's `jwt` auth method mounted at the
//! same path (`kubernetes`), validating the token's signature with a public key
//! (`jwt_validation_pubkeys`: the documented way to accept service-account tokens without
//! TokenReview), configured by `setup.sh --auth jwt`. token-vault's login request is the same
//! for both (`POST auth/kubernetes/login {role, jwt}`). The test signs tokens shaped like a
//! projected service-account token (issuer, audience, subject
//! `system:serviceaccount:agentauth:token-vault`, expiry) with an RSA key of its own, and
//! rewrites the token file as the kubelet does.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::channel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::openbao::{self, OpenBao};
use agentauth_testkit::process::ServiceProcess;
use agentauth_testkit::{free_port, health_status, workspace_root};
use asana_sandbox::seed::ALICE_PAT;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::ServingStatus;

use crate::support::sandbox;

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SUBJECT: &str = "system:serviceaccount:agentauth:token-vault";

/// Signs tokens shaped like projected service-account tokens, RS256.
struct Signer {
    key: aws_lc_rs::rsa::KeyPair,
    /// Every token it made: none may reach a log.
    issued: Mutex<Vec<String>>,
}

impl Signer {
    fn new() -> Self {
        Self {
            key: aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .expect("RSA key"),
            issued: Mutex::new(Vec::new()),
        }
    }

    /// The public key as PEM (SubjectPublicKeyInfo), for `jwt_validation_pubkeys`.
    fn public_pem(&self) -> String {
        let der = self.key.public_key().as_der().expect("DER");
        let encoded = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = encoded
            .as_bytes()
            .chunks(64)
            .map(|chunk| std::str::from_utf8(chunk).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// A token for `subject`, valid for ten minutes.
    fn token(&self, subject: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": "test" });
        let claims = serde_json::json!({
            "iss": ISSUER,
            "aud": ["vault"],
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": {
                "namespace": "agentauth",
                "serviceaccount": { "name": "token-vault", "uid": uuid::Uuid::new_v4().to_string() },
                "pod": { "name": "token-vault-0", "uid": uuid::Uuid::new_v4().to_string() },
            },
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .expect("signed");
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
        self.issued.lock().expect("lock").push(token.clone());
        token
    }
}

/// Writes a fresh token for the current subject into `file` every 500 ms until `stop`, as the
/// kubelet keeps a projected token fresh.
fn kubelet(
    signer: Arc<Signer>,
    file: PathBuf,
    subject: Arc<Mutex<String>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let current = subject.lock().expect("lock").clone();
            let staged = file.with_extension("new");
            std::fs::write(&staged, signer.token(&current)).expect("token written");
            std::fs::rename(&staged, &file).expect("token replaced");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    })
}

/// Runs `deploy/vault/setup.sh ARGS` against `bao` as its root.
async fn setup_sh(bao: &OpenBao, home: &Path, args: &[&str]) -> String {
    let output = tokio::process::Command::new("bash")
        .arg(workspace_root().join("deploy/vault/setup.sh"))
        .args(args)
        .env("VAULT_ADDR", bao.addr())
        .env("VAULT_TOKEN", bao.token())
        .env("VAULT_CLI", openbao::binary().expect("bao"))
        .env("HOME", home)
        .env_remove("BAO_ADDR")
        .env_remove("BAO_TOKEN")
        .output()
        .await
        .expect("setup.sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "setup.sh failed:\n{text}");
    text
}

/// The real token-vault binary on `bao` with `auth` (its `[vault.auth]` section, or nothing)
/// and `VAULT_TOKEN=vault_token`, a SQLite database in `dir`, an `asana-pat` connection to the
/// sandbox at `sandbox_url`, and two callers: `connector-executor` (role executor, any tenant)
/// and `operator` (role operator, tenant acme); once SERVING, with alice's PAT stored.
async fn serving_token_vault(
    bao: &OpenBao,
    auth: &str,
    vault_token: &str,
    dir: &Path,
    sandbox_url: &str,
    [executor, operator]: [&ApiKey; 2],
) -> ServiceProcess {
    let config = format!(
        r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{executor_hash}"
tenants = ["*"]
roles = ["executor"]

[[server.callers]]
name = "operator"
key_sha256 = "{operator_hash}"
tenants = ["acme"]
roles = ["operator"]

[vault]
addr = "{vault}"
timeout = "2s"

{auth}
[database]
url = "sqlite://{db}?mode=rwc"

[oauth]
http_listen = "127.0.0.1:0"
{connections}"#,
        executor_hash = executor.hash(),
        operator_hash = operator.hash(),
        vault = bao.addr(),
        db = dir.join("token-vault.db").display(),
        connections =
            agentauth_testkit::connections::pat("asana-pat", &format!("{sandbox_url}/api/1.0")),
    );
    let token_vault = ServiceProcess::start_program(
        Path::new(env!("CARGO_BIN_EXE_token-vault")),
        &config,
        &[("VAULT_TOKEN", vault_token)],
        free_port(),
    )
    .expect("token-vault starts");
    health_becomes(
        &token_vault,
        ServingStatus::Serving,
        Duration::from_secs(30),
    )
    .await;
    put_alice(&token_vault.url(), operator).await;
    token_vault
}

/// Stores alice's PAT as the operator.
async fn put_alice(url: &str, operator: &ApiKey) {
    TokenVaultClient::new(channel(url, Some(operator)).expect("channel"))
        .put_credential(pb::PutCredentialRequest {
            tenant: "acme".into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            token: ALICE_PAT.into(),
            replace_user: false,
        })
        .await
        .expect("credential stored");
}

fn get(pat_user: &str) -> pb::GetAccessTokenRequest {
    pb::GetAccessTokenRequest {
        tenant: "acme".into(),
        connection_name: "asana-pat".into(),
        identifier: pat_user.into(),
        min_valid_for: None,
    }
}

/// Waits up to `within` for token-vault's health to report `want`.
async fn health_becomes(process: &ServiceProcess, want: ServingStatus, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if health_status(process.address(), "").await.ok() == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token-vault did not report {want:?} within {within:?}:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_vault_logs_in_as_its_service_account_renews_and_logs_in_again() {
    let bao = OpenBao::start().expect("a private OpenBao");
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Arc::new(Signer::new());
    let pubkey = dir.path().join("sa-signing-key.pem");
    std::fs::write(&pubkey, signer.public_pem()).expect("public key written");
    // Tokens live 3 s and may be renewed up to 8 s after login: renewals and new logins happen
    // within the test.
    let jwt_args = [
        "--auth",
        "jwt",
        "--jwt-validation-pubkey",
        pubkey.to_str().expect("utf-8 path"),
        "--jwt-issuer",
        ISSUER,
        "--token-ttl",
        "3s",
        "--token-max-ttl",
        "8s",
    ];
    let first = setup_sh(&bao, dir.path(), &jwt_args).await;
    assert!(
        first.contains("enabled jwt auth at auth/kubernetes"),
        "{first}"
    );
    let again = setup_sh(&bao, dir.path(), &jwt_args).await;
    assert!(again.contains("already enabled"), "idempotent: {again}");

    // Asana: an in-process sandbox, for the PAT's validation.
    let shutdown = CancellationToken::new();
    let (_sandbox, sandbox_url) = sandbox(false, &shutdown).await;

    let jwt_file = dir.path().join("token");
    let subject = Arc::new(Mutex::new(SUBJECT.to_owned()));
    let kubelet = kubelet(
        signer.clone(),
        jwt_file.clone(),
        subject.clone(),
        shutdown.clone(),
    );
    let (executor, operator) = (ApiKey::generate(), ApiKey::generate());
    let auth = format!(
        "[vault.auth]\nmethod = \"kubernetes\"\nrole = \"agentauth-token-vault\"\njwt_file = \"{}\"\n",
        jwt_file.display()
    );
    // The root token is not in its environment: whatever it can do, its login gave it.
    let token_vault = serving_token_vault(
        &bao,
        &auth,
        "",
        dir.path(),
        &sandbox_url,
        [&executor, &operator],
    )
    .await;
    let url = token_vault.url();
    let client = |key: &ApiKey| TokenVaultClient::new(channel(&url, Some(key)).expect("channel"));

    // Under the policy alone it stored a credential (creating the tenant's key); it serves it.

    // Twelve seconds of calls: past the 3 s TTL (renewals) and the 8 s max TTL (a new login
    // with the token file as it is then). None fails.
    let started = tokio::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(12) {
        let token = client(&executor)
            .get_access_token(get("alice"))
            .await
            .unwrap_or_else(|status| {
                panic!(
                    "call {calls} failed at {:?}: {status:?}\n{}",
                    started.elapsed(),
                    token_vault.log()
                )
            })
            .into_inner();
        assert_eq!(token.access_token, ALICE_PAT);
        calls += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = token_vault.log();
    assert!(
        log.matches("logged in to vault").count() >= 2,
        "a new login after the max TTL:\n{log}"
    );
    assert!(
        log.contains("vault token renewed"),
        "renewed before expiry:\n{log}"
    );

    // Its key rotation and tenant deletion work under the policy too.
    let rotated = client(&operator)
        .rotate_tenant_key(pb::RotateTenantKeyRequest {
            tenant: "acme".into(),
        })
        .await
        .expect("rotated under the policy")
        .into_inner();
    assert_eq!((rotated.key_version, rotated.credentials_rewrapped), (2, 1));
    client(&executor)
        .get_access_token(get("alice"))
        .await
        .expect("served after the rotation");

    // The kubelet now writes tokens of another ServiceAccount: the next login is refused, the
    // Vault token runs out, and token-vault is not ready and refuses calls needing Vault.
    *subject.lock().expect("lock") = "system:serviceaccount:agentauth:intruder".to_owned();
    health_becomes(
        &token_vault,
        ServingStatus::NotServing,
        Duration::from_secs(20),
    )
    .await;
    let refused = client(&executor)
        .get_access_token(get("alice"))
        .await
        .expect_err("no Vault token");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        token_vault.log().contains("vault login failed"),
        "{}",
        token_vault.log()
    );

    // The right ServiceAccount's token again: it logs in and serves.
    *subject.lock().expect("lock") = SUBJECT.to_owned();
    health_becomes(
        &token_vault,
        ServingStatus::Serving,
        Duration::from_secs(20),
    )
    .await;
    client(&executor)
        .get_access_token(get("alice"))
        .await
        .expect("served again");
    let deleted = client(&operator)
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: "acme".into(),
            confirm_tenant: "acme".into(),
        })
        .await
        .expect("deleted under the policy")
        .into_inner();
    assert_eq!(deleted.accounts_deleted, 1);

    shutdown.cancel();
    kubelet.await.expect("kubelet stopped");
    let log = token_vault.log();
    for jwt in signer.issued.lock().expect("lock").iter() {
        let signature = jwt.rsplit('.').next().expect("signature");
        assert!(
            !log.contains(signature),
            "a service-account token was logged"
        );
    }
    assert!(!log.contains(bao.token()), "the root token was logged");
    assert!(!log.contains(ALICE_PAT), "the PAT was logged");
    // OpenBao's service tokens start `s.`: none of the tokens it issued reached the log.
    assert!(
        !log.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.'))
            .any(|word| word.starts_with("s.") && word.len() > 20),
        "a Vault token was logged:\n{log}"
    );
}

/// A static token that expires unless renewed (a periodic token holding only token-vault's
/// policy, as deploy/vault/README.md has operators create): token-vault looks it up, renews it
/// before each period ends, and keeps serving past several periods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewable_static_token_is_renewed_before_it_expires() {
    let bao = OpenBao::start().expect("a private OpenBao");
    let dir = tempfile::tempdir().expect("tempdir");
    setup_sh(&bao, dir.path(), &["--auth", "none"]).await;
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/auth/token/create-orphan", bao.addr()))
        .header("X-Vault-Token", bao.token())
        .json(&serde_json::json!({ "policies": ["agentauth-token-vault"], "period": "3s" }))
        .send()
        .await
        .expect("vault answers")
        .json()
        .await
        .expect("json");
    let token = created["auth"]["client_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let shutdown = CancellationToken::new();
    let (_sandbox, sandbox_url) = sandbox(false, &shutdown).await;
    let (executor, operator) = (ApiKey::generate(), ApiKey::generate());
    let token_vault = serving_token_vault(
        &bao,
        "",
        &token,
        dir.path(),
        &sandbox_url,
        [&executor, &operator],
    )
    .await;
    let url = token_vault.url();

    // Eight seconds: the 3 s period passes twice over.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        TokenVaultClient::new(channel(&url, Some(&executor)).expect("channel"))
            .get_access_token(get("alice"))
            .await
            .unwrap_or_else(|status| panic!("{status:?}\n{}", token_vault.log()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = token_vault.log();
    assert!(
        log.contains("using the vault token from the environment")
            && log.contains("renewable=true"),
        "{log}"
    );
    assert!(
        log.matches("vault token renewed").count() >= 2,
        "renewed within each period:\n{log}"
    );
    assert!(!log.contains(&token), "the Vault token was logged");
    shutdown.cancel();
}
