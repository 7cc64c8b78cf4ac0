//! token-vault served in-process against the OpenBao dev server, PostgreSQL or SQLite, and an
//! in-process Asana sandbox. Every test has its own Vault path prefix (so its own tenant keys),
//! its own database and its own sandbox.

use agentauth_testkit::connections::{self, OAuthApp};
use agentauth_testkit::logs;

use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_launch::Service as _;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::{free_port, health_status, openbao};
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT, SERVICE_ACCOUNT_TOKEN};
use figment::providers::{Format as _, Toml};
use token_vault::{Config, TokenVaultService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::db::Db;
use logs::logs;

const BAD_PAT: &str = "sandbox-pat-nobody-has-this-one";

fn assert_logs_hold_no_token() {
    logs::assert_logs_hold_none_of(&[ALICE_PAT, BOB_PAT, SERVICE_ACCOUNT_TOKEN, BAD_PAT]);
}

/// An Asana sandbox serving in-process; its REST base URL.
async fn sandbox() -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let sandbox = asana_sandbox::Sandbox::new(asana_sandbox::Config {
        public_url: format!("http://{address}"),
        ..asana_sandbox::Config::default()
    });
    let stop = CancellationToken::new();
    tokio::spawn(sandbox.serve(listener, stop.clone()));
    (format!("http://{address}/api/1.0"), stop)
}

/// The Asana user a token acts as, straight from the sandbox: (gid, name).
async fn asana_me(api: &str, token: &str) -> (String, String) {
    let me: serde_json::Value = reqwest::Client::new()
        .get(format!("{api}/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sandbox answers")
        .json()
        .await
        .expect("json");
    (
        me["data"]["gid"].as_str().expect("gid").to_owned(),
        me["data"]["name"].as_str().expect("name").to_owned(),
    )
}

struct Keys {
    acme: ApiKey,
    globex: ApiKey,
    both: ApiKey,
}

impl Keys {
    fn new() -> Self {
        Self {
            acme: ApiKey::generate(),
            globex: ApiKey::generate(),
            both: ApiKey::generate(),
        }
    }
}

/// One token-vault serving in-process.
struct Instance {
    url: String,
    prefix: String,
    shutdown: CancellationToken,
    _sandbox: CancellationToken,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self._sandbox.cancel();
    }
}

struct Setup<'a> {
    db_url: &'a str,
    vault_addr: &'a str,
    asana_api: &'a str,
    keys: &'a Keys,
}

fn config_text(setup: &Setup<'_>, prefix: &str) -> String {
    let caller = |name: &str, key: &ApiKey, tenants: &str, connections: &str| {
        format!(
            "[[server.callers]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\ntenants = {tenants}\nconnections = {connections}\nroles = [\"operator\"]\n\n",
            key.hash()
        )
    };
    let api = setup.asana_api;
    let dead = format!("http://{}/api/1.0", free_port());
    let app = OAuthApp {
        asana: api,
        client_id: "sandbox-rest-app",
        client_secret: "vault:secret/data/agentauth/apps/asana#client_secret",
        redirect_url: "http://127.0.0.1:50060/oauth/callback",
        revocable: false,
    };
    let connections = app.rest("asana", api)
        + &connections::pat("asana-pat", api)
        + &connections::service_account("asana-sa", api)
        + &connections::pat("asana-down", &dead);
    format!(
        r#"[server]
readiness_interval = "100ms"

{}{}{}[vault]
addr = "{}"
path_prefix = "{prefix}"

[database]
url = "{}"

{}"#,
        caller(
            "acme-agent",
            &setup.keys.acme,
            r#"["acme"]"#,
            r#"["asana", "asana-pat", "asana-sa", "asana-down"]"#
        ),
        caller(
            "globex-agent",
            &setup.keys.globex,
            r#"["globex"]"#,
            r#"["*"]"#
        ),
        caller(
            "both-agent",
            &setup.keys.both,
            r#"["acme", "globex"]"#,
            r#"["asana-pat"]"#
        ),
        setup.vault_addr,
        setup.db_url,
        connections,
    )
}

impl Instance {
    /// Starts token-vault; waits for SERVING when `ready`, else only for the server to answer.
    async fn start(setup: Setup<'_>, sandbox: CancellationToken, ready: bool) -> Self {
        logs();
        let prefix = openbao::fresh_prefix();
        let config: Config = figment::Figment::from(Toml::string(&config_text(&setup, &prefix)))
            .extract()
            .expect("valid config");
        // The OAuth callback on a port of its own (the default, 50060, is make run's).
        let callbacks = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let service = TokenVaultService::with_vault_token(config, openbao::shared().token())
            .expect("service")
            .with_callback_listener(callbacks);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        tokio::spawn(service.run(listener, shutdown.clone()));
        if ready {
            agentauth_testkit::wait_serving(address, "", Duration::from_secs(20))
                .await
                .expect("serving");
        } else {
            agentauth_testkit::assert_eventually!(
                Duration::from_secs(20),
                async { health_status(address, "").await.is_ok() },
                "token-vault answers"
            );
        }
        Self {
            url: format!("http://{address}"),
            prefix,
            shutdown,
            _sandbox: sandbox,
        }
    }

    fn client(&self, key: &ApiKey) -> TokenVaultClient<AuthenticatedChannel> {
        TokenVaultClient::new(channel(&self.url, Some(key)).expect("channel"))
    }

    /// Every raw KV entry under this instance's prefix, read with the root token: (path, body).
    async fn raw_kv_entries(&self) -> Vec<(String, String)> {
        let vault = openbao::shared();
        let http = reqwest::Client::new();
        let mut pending = vec![self.prefix.clone()];
        let mut entries = Vec::new();
        while let Some(dir) = pending.pop() {
            let listed = http
                .request(
                    reqwest::Method::from_bytes(b"LIST").expect("method"),
                    format!("{}/v1/secret/metadata/{dir}", vault.addr()),
                )
                .header("X-Vault-Token", vault.token())
                .send()
                .await
                .expect("vault answers");
            if listed.status() == 404 {
                continue;
            }
            let listed: serde_json::Value = listed.json().await.expect("json");
            for key in listed["data"]["keys"].as_array().expect("keys") {
                let key = key.as_str().expect("key");
                let path = format!("{dir}/{}", key.trim_end_matches('/'));
                if key.ends_with('/') {
                    pending.push(path);
                } else {
                    let body = http
                        .get(format!("{}/v1/secret/data/{path}", vault.addr()))
                        .header("X-Vault-Token", vault.token())
                        .send()
                        .await
                        .expect("vault answers")
                        .text()
                        .await
                        .expect("body");
                    entries.push((path, body));
                }
            }
        }
        entries
    }
}

fn put(tenant: &str, connection: &str, identifier: &str, token: &str) -> pb::PutCredentialRequest {
    pb::PutCredentialRequest {
        tenant: tenant.into(),
        connection_name: connection.into(),
        identifier: identifier.into(),
        token: token.into(),
        replace_user: false,
    }
}

fn get(tenant: &str, connection: &str, identifier: &str) -> pb::GetAccountRequest {
    pb::GetAccountRequest {
        tenant: tenant.into(),
        connection_name: connection.into(),
        identifier: identifier.into(),
    }
}

/// The ciphertext a raw KV entry holds.
fn ciphertext(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).expect("json");
    value["data"]["data"]["ciphertext"]
        .as_str()
        .expect("a ciphertext field")
        .to_owned()
}

async fn pat_lifecycle(backend: &str) {
    use tonic_types::StatusExt as _;

    let db = Db::create(backend).await;
    let (api, sandbox) = sandbox().await;
    let keys = Keys::new();
    let vault = openbao::shared();
    let instance = Instance::start(
        Setup {
            db_url: db.url(),
            vault_addr: vault.addr(),
            asana_api: &api,
            keys: &keys,
        },
        sandbox,
        true,
    )
    .await;
    let mut client = instance.client(&keys.acme);
    let (alice_gid, alice_name) = asana_me(&api, ALICE_PAT).await;
    let (bob_gid, _) = asana_me(&api, BOB_PAT).await;

    // A token Asana refuses: INVALID_ARGUMENT, and nothing stored anywhere.
    let refused = client
        .put_credential(put("acme", "asana-pat", "user_1", BAD_PAT))
        .await
        .expect_err("a bad PAT is refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("refused by Asana"),
        "{}",
        refused.message()
    );
    let missing = client
        .get_account(get("acme", "asana-pat", "user_1"))
        .await
        .expect_err("no record");
    assert_eq!(missing.code(), Code::NotFound);
    assert!(instance.raw_kv_entries().await.is_empty(), "no KV entry");

    // A valid PAT: ACTIVE, as the sandbox user it belongs to.
    let account = client
        .put_credential(put("acme", "asana-pat", "user_1", ALICE_PAT))
        .await
        .expect("a valid PAT is stored")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert_eq!(account.auth_method, pb::AuthMethod::Pat as i32);
    assert_eq!(account.asana_user_gid, alice_gid);
    assert_eq!(account.asana_user_name, alice_name);
    assert_eq!(account.credential_version, 1);
    assert!(uuid::Uuid::parse_str(&account.account_id).is_ok());

    // The raw KV entry is Transit ciphertext, never the PAT.
    let entries = instance.raw_kv_entries().await;
    assert_eq!(entries.len(), 1);
    let (path, body) = &entries[0];
    assert!(!path.contains("acme") && !path.contains("user_1"), "{path}");
    assert!(ciphertext(body).starts_with("vault:v1:"), "{body}");
    assert!(!body.contains(ALICE_PAT), "KV holds the PAT in clear");

    // A token of another Asana user is refused: the account is bound to its user, and keeps
    // its credential and version; the refusal is audited without the token.
    let mismatch = client
        .put_credential(put("acme", "asana-pat", "user_1", BOB_PAT))
        .await
        .expect_err("another Asana user's token");
    assert_eq!(mismatch.code(), Code::FailedPrecondition);
    assert_eq!(
        mismatch.get_details_error_info().map(|info| info.reason),
        Some("ASANA_USER_MISMATCH".to_owned())
    );
    let kept = client
        .get_account(get("acme", "asana-pat", "user_1"))
        .await
        .expect("get")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(
        (kept.asana_user_gid.as_str(), kept.credential_version),
        (alice_gid.as_str(), 1)
    );

    // Re-putting the same user's token replaces the credential and bumps the version; with
    // replace_user another user's token replaces it too. The account id stays.
    let renewed = client
        .put_credential(put("acme", "asana-pat", "user_1", ALICE_PAT))
        .await
        .expect("the same user's token")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(renewed.credential_version, 2);
    let replaced = client
        .put_credential(pb::PutCredentialRequest {
            replace_user: true,
            ..put("acme", "asana-pat", "user_1", BOB_PAT)
        })
        .await
        .expect("re-put with replace_user")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(replaced.account_id, account.account_id);
    assert_eq!(replaced.credential_version, 3);
    assert_eq!(replaced.asana_user_gid, bob_gid);

    // GetAccount never returns a secret.
    let fetched = client
        .get_account(get("acme", "asana-pat", "user_1"))
        .await
        .expect("get")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(fetched, replaced);
    assert!(!format!("{fetched:?}").contains(BOB_PAT));

    // A service-account token on its connection; an OAuth connection refuses PutCredential.
    let service = client
        .put_credential(put("acme", "asana-sa", "robot", SERVICE_ACCOUNT_TOKEN))
        .await
        .expect("service account")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(service.auth_method, pb::AuthMethod::ServiceAccount as i32);
    let oauth = client
        .put_credential(put("acme", "asana", "user_1", ALICE_PAT))
        .await
        .expect_err("oauth connection");
    assert_eq!(oauth.code(), Code::FailedPrecondition);
    let unknown = client
        .put_credential(put("acme", "asana_pat", "user_1", ALICE_PAT))
        .await
        .expect_err("unknown connection");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("asana-pat"),
        "{}",
        unknown.message()
    );

    // Asana unreachable: UNAVAILABLE.
    let down = client
        .put_credential(put("acme", "asana-down", "user_1", ALICE_PAT))
        .await
        .expect_err("asana down");
    assert_eq!(down.code(), Code::Unavailable);

    // ListAccounts: filters and paging.
    let all = client
        .list_accounts(pb::ListAccountsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.accounts.len(), 2);
    assert!(all.next_page_token.is_empty());
    let first = client
        .list_accounts(pb::ListAccountsRequest {
            tenant: "acme".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(first.accounts.len(), 1);
    let second = client
        .list_accounts(pb::ListAccountsRequest {
            tenant: "acme".into(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(second.accounts.len(), 1);
    assert_ne!(first.accounts[0].account_id, second.accounts[0].account_id);
    assert!(second.next_page_token.is_empty());
    let by_connection = client
        .list_accounts(pb::ListAccountsRequest {
            tenant: "acme".into(),
            connection_name: Some("asana-sa".into()),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(by_connection.accounts, std::slice::from_ref(&service));
    let missing_tenant = client
        .list_accounts(pb::ListAccountsRequest::default())
        .await
        .expect_err("tenant required");
    assert_eq!(missing_tenant.code(), Code::InvalidArgument);

    // GetIdentityStatus: one entry per connection this caller may use.
    let status = client
        .get_identity_status(pb::GetIdentityStatusRequest {
            tenant: "acme".into(),
            identifier: "user_1".into(),
        })
        .await
        .expect("status")
        .into_inner();
    let names: Vec<&str> = status
        .connections
        .iter()
        .map(|c| c.connection_name.as_str())
        .collect();
    assert_eq!(names, ["asana", "asana-down", "asana-pat", "asana-sa"]);
    let pat = &status.connections[2];
    assert_eq!(pat.state, Some(pb::AccountState::Active as i32));
    assert_eq!(pat.account.as_ref(), Some(&replaced));
    assert!(status.connections[0].account.is_none());
    assert!(status.connections[0].state.is_none());

    // Disconnect: every KV version and the metadata go, the account is REVOKED.
    let disconnected = client
        .disconnect_account(pb::DisconnectAccountRequest {
            tenant: "acme".into(),
            connection_name: "asana-pat".into(),
            identifier: "user_1".into(),
            reason: "left the company".into(),
        })
        .await
        .expect("disconnect")
        .into_inner();
    let revoked = disconnected.account.expect("account");
    assert_eq!(revoked.state, pb::AccountState::Revoked as i32);
    assert!(!disconnected.revoked_upstream);
    let remaining = instance.raw_kv_entries().await;
    assert_eq!(
        remaining.len(),
        1,
        "only the service account's entry is left"
    );
    let revoked_state = client
        .list_accounts(pb::ListAccountsRequest {
            tenant: "acme".into(),
            state: Some(pb::AccountState::Revoked as i32),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(revoked_state.accounts, [revoked]);

    // A revoked account binds no Asana user: connecting it again as another user needs no
    // replace_user.
    let reconnected = client
        .put_credential(put("acme", "asana-pat", "user_1", ALICE_PAT))
        .await
        .expect("a revoked account reconnected as another user")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(reconnected.asana_user_gid, alice_gid);
    assert_eq!(reconnected.state, pb::AccountState::Active as i32);

    assert_logs_hold_no_token();
}

#[tokio::test]
async fn pat_lifecycle_on_postgres() {
    pat_lifecycle("postgres").await;
}

#[tokio::test]
async fn pat_lifecycle_on_sqlite() {
    pat_lifecycle("sqlite").await;
}

async fn tenants_are_isolated(backend: &str) {
    let db = Db::create(backend).await;
    let (api, sandbox) = sandbox().await;
    let keys = Keys::new();
    let instance = Instance::start(
        Setup {
            db_url: db.url(),
            vault_addr: openbao::shared().addr(),
            asana_api: &api,
            keys: &keys,
        },
        sandbox,
        true,
    )
    .await;
    let (alice_gid, _) = asana_me(&api, ALICE_PAT).await;
    let (bob_gid, _) = asana_me(&api, BOB_PAT).await;
    let mut acme = instance.client(&keys.acme);
    let mut globex = instance.client(&keys.globex);
    let mut both = instance.client(&keys.both);
    acme.put_credential(put("acme", "asana-pat", "user_1", ALICE_PAT))
        .await
        .expect("acme put");

    // Tenant B's caller cannot touch tenant A's account by any RPC.
    let denied = [
        globex
            .get_account(get("acme", "asana-pat", "user_1"))
            .await
            .map(drop),
        globex
            .list_accounts(pb::ListAccountsRequest {
                tenant: "acme".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        globex
            .get_identity_status(pb::GetIdentityStatusRequest {
                tenant: "acme".into(),
                identifier: "user_1".into(),
            })
            .await
            .map(drop),
        globex
            .put_credential(put("acme", "asana-pat", "user_1", BOB_PAT))
            .await
            .map(drop),
        globex
            .disconnect_account(pb::DisconnectAccountRequest {
                tenant: "acme".into(),
                connection_name: "asana-pat".into(),
                identifier: "user_1".into(),
                reason: String::new(),
            })
            .await
            .map(drop),
        globex
            .delete_tenant(pb::DeleteTenantRequest {
                tenant: "acme".into(),
                confirm_tenant: "acme".into(),
            })
            .await
            .map(drop),
    ];
    for result in denied {
        let status = result.expect_err("denied");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }

    // A caller for both tenants sees each account only under its own tenant.
    both.put_credential(put("globex", "asana-pat", "user_1", BOB_PAT))
        .await
        .expect("globex put");
    let in_acme = both
        .get_account(get("acme", "asana-pat", "user_1"))
        .await
        .expect("acme")
        .into_inner()
        .account
        .expect("account");
    let in_globex = both
        .get_account(get("globex", "asana-pat", "user_1"))
        .await
        .expect("globex")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(
        (in_acme.tenant.as_str(), in_acme.asana_user_gid.as_str()),
        ("acme", alice_gid.as_str())
    );
    assert_eq!(
        (in_globex.tenant.as_str(), in_globex.asana_user_gid.as_str()),
        ("globex", bob_gid.as_str())
    );
    assert_eq!(in_acme.credential_version, 1);
    assert_eq!(in_globex.credential_version, 1);
    for tenant in ["acme", "globex"] {
        let listed = both
            .list_accounts(pb::ListAccountsRequest {
                tenant: tenant.into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.accounts.len(), 1);
        assert_eq!(listed.accounts[0].tenant, tenant);
    }
    // Not bound to the connection: denied even for its own tenant.
    let other_connection = both
        .get_account(get("acme", "asana-sa", "user_1"))
        .await
        .expect_err("connection not allowed");
    assert_eq!(other_connection.code(), Code::PermissionDenied);

    assert_logs_hold_no_token();
}

#[tokio::test]
async fn tenants_are_isolated_on_postgres() {
    tenants_are_isolated("postgres").await;
}

#[tokio::test]
async fn tenants_are_isolated_on_sqlite() {
    tenants_are_isolated("sqlite").await;
}

#[tokio::test]
async fn deleting_a_tenant_crypto_shreds_its_ciphertext() {
    let db = Db::create("sqlite").await;
    let (api, sandbox) = sandbox().await;
    let keys = Keys::new();
    let vault = openbao::shared();
    let instance = Instance::start(
        Setup {
            db_url: db.url(),
            vault_addr: vault.addr(),
            asana_api: &api,
            keys: &keys,
        },
        sandbox,
        true,
    )
    .await;
    let mut client = instance.client(&keys.acme);
    client
        .put_credential(put("acme", "asana-pat", "user_1", ALICE_PAT))
        .await
        .expect("put");
    let entries = instance.raw_kv_entries().await;
    let old = ciphertext(&entries[0].1);
    let key = token_vault::secrets::tenant_key_name(&instance.prefix, "acme");
    let decrypt = || async {
        reqwest::Client::new()
            .post(format!("{}/v1/transit/decrypt/{key}", vault.addr()))
            .header("X-Vault-Token", vault.token())
            .json(&serde_json::json!({ "ciphertext": old }))
            .send()
            .await
            .expect("vault answers")
            .status()
    };
    assert!(decrypt().await.is_success(), "readable before the deletion");

    let unconfirmed = client
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: "acme".into(),
            confirm_tenant: "acme-typo".into(),
        })
        .await
        .expect_err("confirmation must match");
    assert_eq!(unconfirmed.code(), Code::InvalidArgument);

    let deleted = client
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: "acme".into(),
            confirm_tenant: "acme".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.accounts_deleted, 1);
    assert!(deleted.encryption_key_destroyed);
    assert!(
        !decrypt().await.is_success(),
        "old ciphertext is unreadable"
    );
    assert!(instance.raw_kv_entries().await.is_empty());
    let gone = client
        .get_account(get("acme", "asana-pat", "user_1"))
        .await
        .expect_err("record gone");
    assert_eq!(gone.code(), Code::NotFound);

    // Repeating it is harmless, and the tenant can start again under a new key.
    let again = client
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: "acme".into(),
            confirm_tenant: "acme".into(),
        })
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(again.accounts_deleted, 0);
    let fresh = client
        .put_credential(put("acme", "asana-pat", "user_1", ALICE_PAT))
        .await
        .expect("put after deletion")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(fresh.credential_version, 1);
}

#[tokio::test]
async fn vault_unreachable_is_unavailable() {
    let db = Db::create("sqlite").await;
    let (api, sandbox) = sandbox().await;
    let keys = Keys::new();
    let dead = format!("http://{}", free_port());
    let instance = Instance::start(
        Setup {
            db_url: db.url(),
            vault_addr: &dead,
            asana_api: &api,
            keys: &keys,
        },
        sandbox,
        false,
    )
    .await;
    let status = instance
        .client(&keys.acme)
        .put_credential(put("acme", "asana-pat", "user_1", ALICE_PAT))
        .await
        .expect_err("vault is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("vault"), "{}", status.message());
    assert!(!status.message().contains(ALICE_PAT));
    assert_logs_hold_no_token();
}

#[tokio::test]
async fn a_redirect_from_asana_is_not_followed_with_the_token() {
    // Where the redirect points: it counts what reaches it.
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = reached.clone();
    let serve = |router: axum::Router| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await
        });
        (format!("http://{address}/api/1.0"), stop)
    };
    let (elsewhere, _stop_elsewhere) = serve(axum::Router::new().fallback(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { axum::Json(serde_json::json!({"data": {"gid": "1", "name": "stolen"}})) }
    }))
    .await;
    let (api, redirecting) = serve(axum::Router::new().fallback(move || {
        let target = format!("{elsewhere}/users/me");
        async move { (axum::http::StatusCode::FOUND, [("Location", target)]) }
    }))
    .await;
    let db = Db::create("sqlite").await;
    let keys = Keys::new();
    let instance = Instance::start(
        Setup {
            db_url: db.url(),
            vault_addr: openbao::shared().addr(),
            asana_api: &api,
            keys: &keys,
        },
        redirecting,
        true,
    )
    .await;
    let refused = instance
        .client(&keys.acme)
        .put_credential(put("acme", "asana-pat", "alice", ALICE_PAT))
        .await
        .expect_err("a PAT whose check was redirected is not stored");
    assert_eq!(refused.code(), Code::Internal, "{refused:?}");
    assert_eq!(
        reached.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing, least of all the PAT, reached the redirect's target"
    );
    let missing = instance
        .client(&keys.acme)
        .get_account(get("acme", "asana-pat", "alice"))
        .await
        .expect_err("nothing was stored");
    assert_eq!(missing.code(), Code::NotFound);
}
