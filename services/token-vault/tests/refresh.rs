//! GetAccessToken and ReportRejectedToken: refresh before expiry, one refresh per account
//! across replicas (the refresh storm), revocation leading to NEEDS_REAUTH with a link, and
//! who may ask. token-vault runs in-process (one or three instances sharing OpenBao and one
//! database) against an in-process Asana sandbox.

#[path = "support/db.rs"]
mod db;
use agentauth_testkit::logs;

#[path = "support/secrets.rs"]
mod secrets;

use std::sync::Arc;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_launch::Service as _;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::openbao;
use asana_sandbox::{App, AppKind, Sandbox};
use figment::providers::{Format as _, Toml};
use token_vault::secrets::{Location, Secrets};
use token_vault::{Config, TokenVaultService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt as _;

use db::Db;
use logs::{assert_logs_hold_none_of, logs};

const TENANT: &str = "acme";
const ALICE: &str = "alice@acme.test";

/// A sandbox and `replicas` token-vault instances sharing one Vault prefix and one database.
struct Setup {
    sandbox: Sandbox,
    sandbox_url: String,
    /// Each replica's gRPC address.
    replicas: Vec<String>,
    reader: ApiKey,
    agent: ApiKey,
    config_text: String,
    client_secret: String,
    shutdown: CancellationToken,
    _db: Db,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Setup {
    async fn start(backend: &str, replicas: usize) -> Self {
        // The sweeper stays out of the way unless a test asks for it.
        Self::start_sweeping(backend, replicas, "1h").await
    }

    /// Like `start`, with the sweeper running every `sweep_interval`.
    async fn start_sweeping(backend: &str, replicas: usize, sweep_interval: &str) -> Self {
        logs();
        let db = Db::create(backend).await;
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sandbox_url = format!("http://{}", listener.local_addr().expect("address"));
        let sandbox = Sandbox::new(asana_sandbox::Config {
            public_url: sandbox_url.clone(),
            auto_approve: true,
            ..asana_sandbox::Config::default()
        });
        tokio::spawn(sandbox.clone().serve(listener, shutdown.clone()));

        let callbacks: Vec<TcpListener> = {
            let mut listeners = Vec::new();
            for _ in 0..replicas {
                listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
            }
            listeners
        };
        // Every replica's configuration names the first one's callback.
        let redirect = format!(
            "http://{}/oauth/callback",
            callbacks[0].local_addr().expect("address")
        );
        let client_secret = format!("secret-{}", ApiKey::generate().expose());
        sandbox.tokens().register_app(App {
            client_id: "test-rest-app".to_owned(),
            client_secret: client_secret.clone(),
            name: "refresh test app".to_owned(),
            kind: AppKind::Rest,
            redirect_uris: vec![redirect.clone()],
        });
        let prefix = openbao::fresh_prefix();
        let vault = openbao::shared();
        secrets::write_client_secret(&prefix, "asana", &client_secret).await;

        let (reader, agent) = (ApiKey::generate(), ApiKey::generate());
        let config_text = format!(
            r#"token_readers = ["connector-executor"]

[server]
readiness_interval = "100ms"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{reader_hash}"
tenants = ["*"]
connections = ["*"]

[[server.callers]]
name = "acme-agent"
key_sha256 = "{agent_hash}"
tenants = ["{TENANT}"]
connections = ["*"]

[vault]
addr = "{vault_addr}"
path_prefix = "{prefix}"

[database]
url = "{db_url}"

[oauth]
refresh_margin = "5m"
sweep_interval = "{sweep_interval}"
sweep_concurrency = 2

[[connections]]
name = "asana"
kind = "rest"
auth = "oauth"
client_id = "test-rest-app"
client_secret = "vault:secret/data/{prefix}/apps/asana#client_secret"
scopes = ["default"]
redirect_url = "{redirect}"
authorize_url = "{sandbox_url}/-/oauth_authorize"
token_url = "{sandbox_url}/-/oauth_token"
revoke_url = "{sandbox_url}/-/oauth_revoke"
api_base_url = "{sandbox_url}/api/1.0"
"#,
            reader_hash = reader.hash(),
            agent_hash = agent.hash(),
            vault_addr = vault.addr(),
            db_url = db.url(),
        );
        let mut addresses = Vec::new();
        for callback in callbacks {
            let config: Config = figment::Figment::from(Toml::string(&config_text))
                .extract()
                .expect("valid config");
            let service = TokenVaultService::with_vault_token(config, vault.token())
                .expect("service")
                .with_callback_listener(callback);
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            tokio::spawn(service.run(listener, shutdown.clone()));
            agentauth_testkit::wait_serving(address, "", Duration::from_secs(20))
                .await
                .expect("serving");
            addresses.push(format!("http://{address}"));
        }
        Self {
            sandbox,
            sandbox_url,
            replicas: addresses,
            reader,
            agent,
            config_text,
            client_secret,
            shutdown,
            _db: db,
        }
    }

    fn client(&self, replica: usize, key: &ApiKey) -> TokenVaultClient<AuthenticatedChannel> {
        TokenVaultClient::new(channel(&self.replicas[replica], Some(key)).expect("channel"))
    }

    /// Connects alice over the OAuth flow (auto-approved consent, then the callback).
    async fn connect_alice(&self) {
        self.connect(ALICE).await;
    }

    /// Connects `identifier` over the OAuth flow.
    async fn connect(&self, identifier: &str) {
        let link = self
            .client(0, &self.agent)
            .create_authorization_link(pb::CreateAuthorizationLinkRequest {
                tenant: TENANT.into(),
                connection_name: "asana".into(),
                identifier: identifier.into(),
                return_url: None,
            })
            .await
            .expect("link")
            .into_inner();
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let consent = browser
            .get(&link.authorization_url)
            .send()
            .await
            .expect("sandbox answers");
        assert_eq!(consent.status(), 302, "the sandbox approves at once");
        let callback = consent
            .headers()
            .get(reqwest::header::LOCATION)
            .expect("Location")
            .to_str()
            .expect("text")
            .to_owned();
        let page = browser.get(&callback).send().await.expect("callback");
        assert_eq!(page.status(), 200, "connected");
    }

    async fn get_token(
        &self,
        replica: usize,
        key: &ApiKey,
        min_valid_for: Option<Duration>,
    ) -> Result<pb::GetAccessTokenResponse, tonic::Status> {
        self.client(replica, key)
            .get_access_token(pb::GetAccessTokenRequest {
                tenant: TENANT.into(),
                connection_name: "asana".into(),
                identifier: ALICE.into(),
                min_valid_for: min_valid_for.map(|d| d.try_into().expect("duration")),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn account(&self) -> pb::Account {
        self.client(0, &self.agent)
            .get_account(pb::GetAccountRequest {
                tenant: TENANT.into(),
                connection_name: "asana".into(),
                identifier: ALICE.into(),
            })
            .await
            .expect("account")
            .into_inner()
            .account
            .expect("account")
    }

    /// Refreshes served by the sandbox so far.
    fn refreshes(&self) -> u64 {
        self.sandbox.0.limits.stats()["refreshes_total"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The stored (access token, refresh token) of alice.
    async fn stored(&self) -> (String, String) {
        self.stored_of(ALICE).await
    }

    fn secrets(&self) -> Secrets {
        let config: Config = figment::Figment::from(Toml::string(&self.config_text))
            .extract()
            .expect("valid config");
        Secrets::new(&config.vault, openbao::shared().token()).expect("secrets")
    }

    /// The stored (access token, refresh token) of `identifier`.
    async fn stored_of(&self, identifier: &str) -> (String, String) {
        let (secret, _) = self
            .secrets()
            .read(Location {
                tenant: TENANT,
                connection: "asana",
                identifier,
            })
            .await
            .expect("vault answers")
            .expect("a stored secret");
        (
            secret.access_token.expose().to_owned(),
            secret
                .refresh_token
                .map(|t| t.expose().to_owned())
                .unwrap_or_default(),
        )
    }

    /// The sandbox token endpoint's answer to a refresh with `refresh_token`: (status, error).
    async fn try_refresh(&self, refresh_token: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(format!("{}/-/oauth_token", self.sandbox_url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "test-rest-app"),
                ("client_secret", self.client_secret.as_str()),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .expect("sandbox answers");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        (
            status,
            body["error"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Waits (up to 20s) until the sandbox has served `n` refreshes.
    async fn wait_for_refreshes(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.refreshes() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} refreshes, not {n}",
                self.refreshes()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `token` works on the sandbox's REST API.
    async fn works(&self, token: &str) -> bool {
        reqwest::Client::new()
            .get(format!("{}/api/1.0/users/me", self.sandbox_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("sandbox answers")
            .status()
            .is_success()
    }
}

#[tokio::test]
async fn a_fresh_token_is_returned_and_a_near_expiry_one_is_refreshed_once() {
    let setup = Setup::start("sqlite", 1).await;
    setup.connect_alice().await;
    let (stored, refresh_token) = setup.stored().await;

    let fresh = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("a token");
    assert_eq!(fresh.access_token, stored, "the stored token, unrefreshed");
    assert_eq!(setup.refreshes(), 0);
    let account = setup.account().await;
    assert_eq!(fresh.account_id, account.account_id);
    assert_eq!(fresh.credential_version, account.credential_version);
    assert!(!fresh.asana_user_gid.is_empty());
    assert!(fresh.expires_at.is_some());

    // Asking for more than the remaining hour forces one refresh.
    let refreshed = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect("a refreshed token");
    assert_eq!(setup.refreshes(), 1);
    assert_ne!(refreshed.access_token, fresh.access_token);
    assert!(refreshed.credential_version > fresh.credential_version);
    assert!(setup.works(&refreshed.access_token).await);
    let account = setup.account().await;
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert_eq!(account.credential_version, refreshed.credential_version);
    assert!(account.last_refreshed_at.is_some());
    let (_, kept) = setup.stored().await;
    assert_eq!(
        kept, refresh_token,
        "no rotation: the refresh token is kept"
    );

    // The refreshed token is now served as is.
    let again = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("a token");
    assert_eq!(again.access_token, refreshed.access_token);
    assert_eq!(setup.refreshes(), 1);

    // A rejected stale version returns the current one without a refresh.
    let current = setup
        .client(0, &setup.reader)
        .report_rejected_token(pb::ReportRejectedTokenRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            credential_version: fresh.credential_version,
            asana_request_id: String::new(),
        })
        .await
        .expect("the current token")
        .into_inner();
    assert_eq!(current.access_token, refreshed.access_token);
    assert_eq!(current.credential_version, refreshed.credential_version);
    assert_eq!(setup.refreshes(), 1);

    // A rejected current version is refreshed once.
    let renewed = setup
        .client(0, &setup.reader)
        .report_rejected_token(pb::ReportRejectedTokenRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            credential_version: refreshed.credential_version,
            asana_request_id: String::new(),
        })
        .await
        .expect("a new token")
        .into_inner();
    assert!(renewed.credential_version > refreshed.credential_version);
    assert_ne!(renewed.access_token, refreshed.access_token);
    assert_eq!(setup.refreshes(), 2);
    assert!(setup.works(&renewed.access_token).await);

    assert_logs_hold_none_of(&[
        fresh.access_token,
        refreshed.access_token,
        renewed.access_token,
        refresh_token,
        setup.client_secret.clone(),
    ]);
}

#[tokio::test]
async fn only_token_readers_get_tokens() {
    let setup = Setup::start("sqlite", 1).await;
    setup.connect_alice().await;
    let denied = setup
        .get_token(0, &setup.agent, None)
        .await
        .expect_err("not a token reader");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = setup
        .client(0, &setup.agent)
        .report_rejected_token(pb::ReportRejectedTokenRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            credential_version: 1,
            asana_request_id: String::new(),
        })
        .await
        .expect_err("not a token reader");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(setup.refreshes(), 0);
}

#[tokio::test]
async fn revocation_at_asana_leads_to_needs_reauth_with_a_link() {
    let setup = Setup::start("sqlite", 1).await;
    setup.connect_alice().await;
    let (access_token, refresh_token) = setup.stored().await;
    let revoked = reqwest::Client::new()
        .post(format!("{}/-/oauth_revoke", setup.sandbox_url))
        .form(&[
            ("client_id", "test-rest-app"),
            ("client_secret", setup.client_secret.as_str()),
            ("token", refresh_token.as_str()),
        ])
        .send()
        .await
        .expect("sandbox answers");
    assert!(revoked.status().is_success(), "{}", revoked.status());
    assert!(!setup.works(&access_token).await);

    let status = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect_err("the grant is gone");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "AUTH_REQUIRED");
    assert_eq!(info.domain, "agentauth");
    let help = status.get_details_help().expect("Help");
    assert!(
        help.links
            .first()
            .is_some_and(|l| l.url.starts_with(&setup.sandbox_url) && l.url.contains("state=")),
        "a fresh authorization link"
    );
    assert_eq!(
        setup.account().await.state,
        pb::AccountState::NeedsReauth as i32
    );

    // From now on the answer is the same, at once and without going upstream.
    let before = setup.refreshes();
    let again = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect_err("still needs a consent");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(setup.refreshes(), before);

    // A new consent restores ACTIVE.
    setup.connect_alice().await;
    assert_eq!(setup.account().await.state, pb::AccountState::Active as i32);
    let token = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("a token");
    assert!(setup.works(&token.access_token).await);
    assert_logs_hold_none_of(&[access_token, refresh_token, token.access_token]);
}

#[tokio::test]
async fn a_transient_failure_leaves_the_account_expired_and_is_retried() {
    let setup = Setup::start("sqlite", 1).await;
    setup.connect_alice().await;
    setup
        .sandbox
        .0
        .faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(asana_sandbox::Fault {
            path_prefix: "/-/oauth_token".into(),
            latency_ms: 0,
            status: Some(503),
            times: Some(1),
        });
    let status = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect_err("the token endpoint is down");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.get_details_retry_info().is_some(), "RetryInfo");
    assert_eq!(
        setup.account().await.state,
        pb::AccountState::Expired as i32
    );

    let token = setup
        .get_token(0, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect("the retry refreshes");
    assert_eq!(setup.refreshes(), 1);
    assert!(setup.works(&token.access_token).await);
    assert_eq!(setup.account().await.state, pb::AccountState::Active as i32);
    assert_logs_hold_none_of(&[token.access_token]);
}

/// 200 concurrent GetAccessToken calls spread over three replicas for one account that needs
/// a refresh: exactly one refresh at the sandbox, and everyone gets the same new token.
async fn refresh_storm(rotation: bool) {
    let setup = Setup::start("postgres", 3).await;
    // The first token lives one minute: within the five-minute margin, so it needs a refresh.
    setup.sandbox.tokens().lifetime = Duration::from_secs(60);
    setup.sandbox.tokens().rotation = rotation;
    setup.connect_alice().await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(3600);
    let (old_access, old_refresh) = setup.stored().await;
    assert_eq!(setup.refreshes(), 0);

    let setup = Arc::new(setup);
    let calls: Vec<_> = (0..200)
        .map(|i| {
            let setup = setup.clone();
            tokio::spawn(async move { setup.get_token(i % 3, &setup.reader, None).await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    let mut versions = std::collections::HashSet::new();
    for call in calls {
        let token = call.await.expect("joined").expect("a token");
        versions.insert(token.credential_version);
        tokens.insert(token.access_token);
    }
    assert_eq!(setup.refreshes(), 1, "exactly one refresh upstream");
    assert_eq!(tokens.len(), 1, "everyone got the same token");
    assert_eq!(versions.len(), 1);
    let token = tokens.into_iter().next().expect("a token");
    assert_ne!(token, old_access);
    assert!(setup.works(&token).await);
    let (stored_access, stored_refresh) = setup.stored().await;
    assert_eq!(stored_access, token);
    if rotation {
        assert_ne!(
            stored_refresh, old_refresh,
            "the rotated refresh token is stored"
        );
    } else {
        assert_eq!(stored_refresh, old_refresh, "the refresh token is kept");
    }
    // The stored refresh token still works (a later refresh succeeds).
    let forced = setup
        .get_token(1, &setup.reader, Some(Duration::from_secs(2 * 3600)))
        .await
        .expect("refreshed again");
    assert_eq!(setup.refreshes(), 2);
    assert!(setup.works(&forced.access_token).await);
    assert_logs_hold_none_of(&[
        old_access,
        old_refresh,
        token,
        stored_refresh,
        forced.access_token,
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_storm_over_three_replicas_refreshes_once() {
    refresh_storm(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_storm_with_rotation_refreshes_once() {
    refresh_storm(true).await;
}

/// An account expiring within the margin is refreshed by the sweeper alone, once, even with
/// `replicas` instances sweeping the same database.
async fn sweeper_refreshes_before_expiry(backend: &str, replicas: usize) {
    let setup = Setup::start_sweeping(backend, replicas, "100ms").await;
    // The first token lives one minute: within the five-minute margin.
    setup.sandbox.tokens().lifetime = Duration::from_secs(60);
    setup.connect_alice().await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(3600);
    let before = setup.account().await;
    let (old_access, refresh_token) = setup.stored().await;

    setup.wait_for_refreshes(1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = setup.account().await;
        if after.credential_version > before.credential_version {
            break after;
        }
        assert!(tokio::time::Instant::now() < deadline, "the version bumps");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after.state, pb::AccountState::Active as i32);
    assert!(after.last_refreshed_at.is_some());
    let (new_access, _) = setup.stored().await;
    assert_ne!(new_access, old_access);
    assert!(setup.works(&new_access).await);

    // Several more sweeps: the new token is far from expiry, so nothing more happens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(setup.refreshes(), 1, "exactly one refresh upstream");
    assert_eq!(
        setup.account().await.credential_version,
        after.credential_version
    );
    assert_logs_hold_none_of(&[old_access, new_access, refresh_token]);
}

#[tokio::test]
async fn the_sweeper_refreshes_an_expiring_token_without_being_asked() {
    sweeper_refreshes_before_expiry("sqlite", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sweeping_replicas_refresh_once() {
    sweeper_refreshes_before_expiry("postgres", 2).await;
}

#[tokio::test]
async fn the_sweeper_backs_off_after_a_transient_failure() {
    let setup = Setup::start_sweeping("sqlite", 1, "100ms").await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(60);
    setup.connect_alice().await;
    setup.sandbox.tokens().lifetime = Duration::from_secs(3600);
    setup
        .sandbox
        .0
        .faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(asana_sandbox::Fault {
            path_prefix: "/-/oauth_token".into(),
            latency_ms: 0,
            status: Some(503),
            times: Some(1),
        });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while setup.account().await.state != pb::AccountState::Expired as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep fails once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Many sweeps later the account is still waiting out its backoff.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(setup.refreshes(), 0);
    assert_eq!(
        setup.account().await.state,
        pb::AccountState::Expired as i32
    );
    // A caller is not held to the sweeper's backoff.
    let token = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect("refreshed on demand");
    assert_eq!(setup.refreshes(), 1);
    assert!(setup.works(&token.access_token).await);
}

#[tokio::test]
async fn disconnecting_revokes_the_grant_at_asana_and_destroys_the_credential() {
    let setup = Setup::start("sqlite", 1).await;
    setup.connect_alice().await;
    let (access_token, refresh_token) = setup.stored().await;
    let disconnected = setup
        .client(0, &setup.agent)
        .disconnect_account(pb::DisconnectAccountRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: ALICE.into(),
            reason: "left the company".into(),
        })
        .await
        .expect("disconnected")
        .into_inner();
    assert!(disconnected.revoked_upstream);
    assert_eq!(
        disconnected.account.expect("account").state,
        pb::AccountState::Revoked as i32
    );
    assert_eq!(
        setup.account().await.state,
        pb::AccountState::Revoked as i32
    );

    let (status, error) = setup.try_refresh(&refresh_token).await;
    assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    assert!(!setup.works(&access_token).await);

    let at = Location {
        tenant: TENANT,
        connection: "asana",
        identifier: ALICE,
    };
    let secrets = setup.secrets();
    assert!(secrets.read(at).await.expect("vault answers").is_none());
    assert_eq!(
        secrets.current_version(at).await.expect("vault answers"),
        None,
        "no version and no metadata is left"
    );

    let denied = setup
        .get_token(0, &setup.reader, None)
        .await
        .expect_err("disconnected");
    assert_eq!(denied.code(), Code::FailedPrecondition);
    assert_eq!(
        denied.get_details_error_info().expect("ErrorInfo").reason,
        "AUTH_REQUIRED"
    );
    assert_logs_hold_none_of(&[access_token, refresh_token, setup.client_secret.clone()]);
}

#[tokio::test]
async fn deleting_a_tenant_revokes_its_grants_at_asana_first() {
    let setup = Setup::start("sqlite", 1).await;
    setup.connect_alice().await;
    setup.connect("bob@acme.test").await;
    let (_, alice_refresh) = setup.stored().await;
    let (_, bob_refresh) = setup.stored_of("bob@acme.test").await;
    let deleted = setup
        .client(0, &setup.agent)
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: TENANT.into(),
            confirm_tenant: TENANT.into(),
        })
        .await
        .expect("deleted")
        .into_inner();
    assert_eq!(deleted.accounts_deleted, 2);
    assert_eq!(deleted.grants_revoked_upstream, 2);
    assert!(deleted.encryption_key_destroyed);
    for refresh_token in [&alice_refresh, &bob_refresh] {
        let (status, error) = setup.try_refresh(refresh_token).await;
        assert_eq!((status, error.as_str()), (400, "invalid_grant"));
    }
    assert_logs_hold_none_of(&[alice_refresh, bob_refresh]);
}
