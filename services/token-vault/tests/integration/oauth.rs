//! OAuth connect over HTTP: token-vault served in-process (gRPC plus its callback listener)
//! against the OpenBao dev server, PostgreSQL or SQLite, and an in-process Asana sandbox whose
//! OAuth apps redirect to this test's callback.

use crate::secrets;
use crate::support::audit::AuditLog;
use agentauth_testkit::logs;

use std::collections::HashMap;
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_launch::Service as _;
use agentauth_proto::audit::v1 as audit_pb;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::connections::{self, OAuthApp};
use agentauth_testkit::openbao;
use asana_sandbox::seed::{ALICE_PAT, BOB_PAT};
use asana_sandbox::{App, AppKind, Sandbox};
use figment::providers::{Format as _, Toml};
use sha2::{Digest, Sha256};
use sqlx::Row as _;
use token_vault::secrets::{Location, Secrets};
use token_vault::{Config, TokenVaultService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::db::Db;
use logs::{assert_logs_hold_none_of, logs};

const TENANT: &str = "acme";
const RETURN_PREFIX: &str = "https://app.acme.test/connected";

impl AuditLog {
    /// Waits until a `credential.granted` event of `TENANT` that `matches` is recorded.
    async fn granted_eventually(&self, what: &str, matches: impl Fn(&audit_pb::Event) -> bool) {
        agentauth_testkit::assert_eventually!(
            Duration::from_secs(10),
            async {
                self.events(TENANT, "credential.granted")
                    .await
                    .iter()
                    .any(&matches)
            },
            "{what}"
        );
    }
}

/// One sandbox, one audit-log and one token-vault, wired to each other.
struct Instance {
    grpc: String,
    /// The sandbox's base URL (its REST API is under `/api/1.0`).
    sandbox_url: String,
    sandbox: Sandbox,
    /// token-vault's OAuth callback, `http://…/oauth/callback`.
    callback_url: String,
    config_text: String,
    key: ApiKey,
    db_url: String,
    /// Client secrets of the test's apps (secrets: must never be logged).
    client_secrets: Vec<String>,
    audit: AuditLog,
    shutdown: CancellationToken,
    _db: Db,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn random_secret() -> String {
    format!("secret-{}", ApiKey::generate().expose())
}

impl Instance {
    async fn start(backend: &str, auto_approve: bool, link_lifetime: &str) -> Self {
        logs();
        let db = Db::create(backend).await;
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let sandbox_url = format!("http://{}", listener.local_addr().expect("address"));
        let sandbox = Sandbox::new(asana_sandbox::Config {
            public_url: sandbox_url.clone(),
            auto_approve,
            ..asana_sandbox::Config::default()
        });
        tokio::spawn(sandbox.clone().serve(listener, shutdown.clone()));

        let callback_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let callback = callback_listener.local_addr().expect("address");
        let redirect = format!("http://{callback}/oauth/callback");
        let (rest_secret, mcp_secret) = (random_secret(), random_secret());
        for (client_id, secret, kind) in [
            ("test-rest-app", &rest_secret, AppKind::Rest),
            ("test-mcp-app", &mcp_secret, AppKind::Mcp),
        ] {
            sandbox.tokens().register_app(App {
                client_id: client_id.to_owned(),
                client_secret: secret.clone(),
                name: format!("{client_id} (test)"),
                kind,
                redirect_uris: vec![redirect.clone()],
            });
        }
        let prefix = openbao::fresh_prefix();
        let vault = openbao::shared();
        for (app, secret) in [("asana", &rest_secret), ("asana-mcp", &mcp_secret)] {
            secrets::write_client_secret(&prefix, app, secret).await;
        }

        let audit = AuditLog::start(&shutdown).await;
        let key = ApiKey::generate();
        let api = format!("{sandbox_url}/api/1.0");
        let rest_app = OAuthApp {
            asana: &sandbox_url,
            client_id: "test-rest-app",
            client_secret: &format!("vault:secret/data/{prefix}/apps/asana#client_secret"),
            redirect_url: &redirect,
            revocable: false,
        };
        let mcp_secret_ref = format!("vault:secret/data/{prefix}/apps/asana-mcp#client_secret");
        let mcp_app = OAuthApp {
            client_id: "test-mcp-app",
            client_secret: &mcp_secret_ref,
            ..rest_app
        };
        let connections = rest_app.rest("asana", &api)
            + &mcp_app.mcp("asana-mcp", &format!("{sandbox_url}/v2/mcp"), None)
            + &connections::pat("asana-pat", &api);
        let config_text = format!(
            r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "acme-agent"
key_sha256 = "{hash}"
tenants = ["{TENANT}"]
roles = ["executor", "operator"]

[vault]
addr = "{vault_addr}"
path_prefix = "{prefix}"

[database]
url = "{db_url}"

{audit}
[oauth]
return_url_allowlist = ["{RETURN_PREFIX}"]
link_lifetime = "{link_lifetime}"
sweep_interval = "200ms"

{connections}"#,
            hash = key.hash(),
            vault_addr = vault.addr(),
            db_url = db.url(),
            audit = audit.section(0),
        );
        let config: Config = figment::Figment::from(Toml::string(&config_text))
            .extract()
            .expect("valid config");
        let service = TokenVaultService::with_vault_token(config, vault.token())
            .expect("service")
            .with_callback_listener(callback_listener);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(service.run(listener, shutdown.clone()));
        agentauth_testkit::wait_serving(address, "", Duration::from_secs(20))
            .await
            .expect("serving");
        Self {
            grpc: format!("http://{address}"),
            sandbox_url,
            callback_url: redirect.clone(),
            sandbox,
            config_text,
            key,
            db_url: db.url().to_owned(),
            client_secrets: vec![rest_secret, mcp_secret],
            audit,
            shutdown,
            _db: db,
        }
    }

    fn client(&self) -> TokenVaultClient<AuthenticatedChannel> {
        TokenVaultClient::new(channel(&self.grpc, Some(&self.key)).expect("channel"))
    }

    async fn link(
        &self,
        connection: &str,
        identifier: &str,
        return_url: Option<&str>,
    ) -> Result<pb::CreateAuthorizationLinkResponse, tonic::Status> {
        self.link_replacing(connection, identifier, return_url, false)
            .await
    }

    async fn link_replacing(
        &self,
        connection: &str,
        identifier: &str,
        return_url: Option<&str>,
        replace_user: bool,
    ) -> Result<pb::CreateAuthorizationLinkResponse, tonic::Status> {
        self.client()
            .create_authorization_link(pb::CreateAuthorizationLinkRequest {
                tenant: TENANT.into(),
                connection_name: connection.into(),
                identifier: identifier.into(),
                return_url: return_url.map(str::to_owned),
                replace_user,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn account(&self, connection: &str, identifier: &str) -> Result<pb::Account, Code> {
        self.client()
            .get_account(pb::GetAccountRequest {
                tenant: TENANT.into(),
                connection_name: connection.into(),
                identifier: identifier.into(),
            })
            .await
            .map(|r| r.into_inner().account.expect("account"))
            .map_err(|status| status.code())
    }

    /// The stored secret of an account, read and decrypted the way token-vault does.
    async fn stored_secret(&self, connection: &str, identifier: &str) -> (String, String) {
        let config: Config = figment::Figment::from(Toml::string(&self.config_text))
            .extract()
            .expect("valid config");
        let secrets = Secrets::new(&config.vault, openbao::shared().token()).expect("secrets");
        let (secret, _) = secrets
            .read(Location {
                tenant: TENANT,
                connection,
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

    /// Every pending-consent row: (state hash, verifier column).
    async fn oauth_state_rows(&self) -> Vec<(String, String)> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.db_url).await.expect("db");
        let rows = sqlx::query("SELECT state_sha256, verifier_ciphertext FROM oauth_states")
            .fetch_all(&pool)
            .await
            .expect("rows");
        rows.iter()
            .map(|r| {
                (
                    r.try_get("state_sha256").expect("hash"),
                    r.try_get("verifier_ciphertext").expect("verifier"),
                )
            })
            .collect()
    }
}

/// An HTTP client that never follows redirects, like a test's eye on each hop.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

fn query(url: &str) -> HashMap<String, String> {
    reqwest::Url::parse(url)
        .expect("url")
        .query_pairs()
        .into_owned()
        .collect()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(reqwest::header::LOCATION)
        .expect("a Location header")
        .to_str()
        .expect("text")
        .to_owned()
}

/// Opens the authorize URL with auto-approve and returns the callback URL Asana sends to.
async fn consent(authorize_url: &str) -> String {
    let response = browser()
        .get(authorize_url)
        .send()
        .await
        .expect("sandbox answers");
    assert_eq!(response.status(), 302, "the sandbox redirects at once");
    location(&response)
}

/// GETs the callback; (status, Location if any, body).
async fn callback(url: &str) -> (u16, Option<String>, String) {
    let response = browser().get(url).send().await.expect("callback answers");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| l.to_str().expect("text").to_owned());
    (status, location, response.text().await.expect("body"))
}

/// The Asana user a token acts as: (gid, name).
async fn asana_me(api: &str, token: &str) -> Option<(String, String)> {
    let response = reqwest::Client::new()
        .get(format!("{api}/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sandbox answers");
    if !response.status().is_success() {
        return None;
    }
    let me: serde_json::Value = response.json().await.expect("json");
    Some((
        me["data"]["gid"].as_str().expect("gid").to_owned(),
        me["data"]["name"].as_str().expect("name").to_owned(),
    ))
}

fn assert_page_holds_none_of(page: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!page.contains(secret), "a page holds a secret");
    }
}

async fn rest_connect_flow(backend: &str) {
    let instance = Instance::start(backend, true, "10m").await;
    let api = format!("{}/api/1.0", instance.sandbox_url);
    let alice = asana_me(&api, ALICE_PAT).await.expect("alice");

    // Before consent, the status offers a link.
    let status = instance
        .client()
        .get_identity_status(pb::GetIdentityStatusRequest {
            tenant: TENANT.into(),
            identifier: "alice@acme.test".into(),
        })
        .await
        .expect("status")
        .into_inner();
    let rest = status
        .connections
        .iter()
        .find(|c| c.connection_name == "asana")
        .expect("asana status");
    assert!(rest.state.is_none());
    assert!(
        rest.reauthorization_url
            .as_deref()
            .is_some_and(|u| u.contains("state="))
    );
    assert!(rest.reauthorization_url_expires_at.is_some());
    let pat = status
        .connections
        .iter()
        .find(|c| c.connection_name == "asana-pat")
        .expect("pat status");
    assert!(
        pat.reauthorization_url.is_none(),
        "PAT connections get no link"
    );

    let link = instance
        .link("asana", "alice@acme.test", None)
        .await
        .expect("link");
    let expires = link.expires_at.expect("expiry").seconds;
    let now = chrono::Utc::now().timestamp();
    assert!((now + 590..=now + 610).contains(&expires), "10 minutes");
    let params = query(&link.authorization_url);
    assert!(
        link.authorization_url
            .starts_with(&format!("{}/-/oauth_authorize?", instance.sandbox_url))
    );
    assert_eq!(params["client_id"], "test-rest-app");
    assert_eq!(params["response_type"], "code");
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["scope"], "default");
    assert!(params["redirect_uri"].ends_with("/oauth/callback"));
    assert!(params["state"].len() >= 43, "at least 128 random bits");
    assert!(params["code_challenge"].len() >= 43);
    assert!(!params.contains_key("resource"));
    let state = params["state"].clone();

    let callback_url = consent(&link.authorization_url).await;
    let returned = query(&callback_url);
    let code = returned["code"].clone();
    assert_eq!(returned["state"], state);

    let (status, _, page) = callback(&callback_url).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("asana is connected for alice@acme.test. You can close this window."),
        "{page}"
    );

    let account = instance
        .account("asana", "alice@acme.test")
        .await
        .expect("account");
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert_eq!(account.auth_method, pb::AuthMethod::Oauth as i32);
    assert_eq!(account.asana_user_gid, alice.0);
    assert_eq!(account.asana_user_name, alice.1);
    assert_eq!(account.credential_version, 1);
    assert!(account.expires_at.is_some());

    let (access, refresh) = instance.stored_secret("asana", "alice@acme.test").await;
    assert_eq!(
        asana_me(&api, &access).await.map(|me| me.0),
        Some(alice.0.clone()),
        "the stored token works on the REST API"
    );
    assert!(!refresh.is_empty(), "the refresh token is stored");

    // Once connected, no link is offered.
    let status = instance
        .client()
        .get_identity_status(pb::GetIdentityStatusRequest {
            tenant: TENANT.into(),
            identifier: "alice@acme.test".into(),
        })
        .await
        .expect("status")
        .into_inner();
    let rest = status
        .connections
        .iter()
        .find(|c| c.connection_name == "asana")
        .expect("asana status");
    assert_eq!(rest.state, Some(pb::AccountState::Active as i32));
    assert!(rest.reauthorization_url.is_none());

    // A replayed callback is refused and changes nothing.
    let (replayed, _, replay_page) = callback(&callback_url).await;
    assert_eq!(replayed, 400, "{replay_page}");
    assert!(replay_page.contains("already used"), "{replay_page}");
    let after = instance
        .account("asana", "alice@acme.test")
        .await
        .expect("account");
    assert_eq!(after.credential_version, 1);
    assert_eq!(after.updated_at, account.updated_at);

    // The database holds the state's hash and the verifier as ciphertext only.
    let rows = instance.oauth_state_rows().await;
    assert!(!rows.is_empty());
    let state_hash = hex::encode(Sha256::digest(state.as_bytes()));
    assert!(rows.iter().any(|(hash, _)| *hash == state_hash));
    for (hash, verifier) in &rows {
        assert_ne!(hash, &state);
        assert!(
            verifier.starts_with("vault:v1:"),
            "the verifier is encrypted"
        );
    }

    // One grant, audited with the account and its credential version.
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            !instance
                .audit
                .events(TENANT, "credential.granted")
                .await
                .is_empty()
        },
        "credential.granted reaches audit-log"
    );
    let granted = instance.audit.events(TENANT, "credential.granted").await;
    assert_eq!(granted.len(), 1, "the replay granted nothing");
    let credential = granted[0].credential.clone().expect("credential");
    assert_eq!(credential.account_id, account.account_id);
    assert_eq!(credential.version, 1);
    let subject = granted[0].subject.clone().expect("subject");
    assert_eq!(subject.connection_name, "asana");
    assert_eq!(subject.identifier, "alice@acme.test");
    assert_eq!(subject.asana_user_gid, alice.0);

    let mut secrets: Vec<&str> = vec![&state, &code, &access, &refresh];
    secrets.extend(instance.client_secrets.iter().map(String::as_str));
    let audited = format!("{granted:?}");
    assert_page_holds_none_of(&audited, &secrets);
    assert_page_holds_none_of(&page, &secrets);
    assert_page_holds_none_of(&replay_page, &secrets);
    assert_logs_hold_none_of(&secrets);
}

#[tokio::test]
async fn rest_connect_flow_on_sqlite() {
    rest_connect_flow("sqlite").await;
}

#[tokio::test]
async fn rest_connect_flow_on_postgres() {
    rest_connect_flow("postgres").await;
}

#[tokio::test]
async fn mcp_connect_takes_the_user_from_the_token_response() {
    let instance = Instance::start("sqlite", true, "10m").await;
    let api = format!("{}/api/1.0", instance.sandbox_url);
    let bob = asana_me(&api, BOB_PAT).await.expect("bob");
    let link = instance
        .link("asana-mcp", "bob@acme.test", None)
        .await
        .expect("link");
    let params = query(&link.authorization_url);
    assert_eq!(params["client_id"], "test-mcp-app");
    assert_eq!(params["scope"], "default");
    assert_eq!(
        params["resource"],
        format!("{}/v2/mcp", instance.sandbox_url)
    );
    let callback_url = consent(&format!(
        "{}&sandbox_user={}",
        link.authorization_url, bob.0
    ))
    .await;
    let (status, _, page) = callback(&callback_url).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("asana-mcp is connected for bob@acme.test"),
        "{page}"
    );
    let account = instance
        .account("asana-mcp", "bob@acme.test")
        .await
        .expect("account");
    assert_eq!(account.state, pb::AccountState::Active as i32);
    assert_eq!(account.asana_user_gid, bob.0);
    assert_eq!(account.credential_version, 1);
    assert_eq!(account.scopes, ["default"]);
    let (access, refresh) = instance.stored_secret("asana-mcp", "bob@acme.test").await;
    assert!(!access.is_empty() && !refresh.is_empty());
    assert_logs_hold_none_of(&[&access, &refresh, &params["state"]]);
}

#[tokio::test]
async fn declined_consent_stores_nothing() {
    let instance = Instance::start("sqlite", false, "10m").await;
    let link = instance
        .link("asana", "carol@acme.test", None)
        .await
        .expect("link");
    let consent_page = browser()
        .get(&link.authorization_url)
        .send()
        .await
        .expect("sandbox answers");
    assert_eq!(consent_page.status(), 200);
    assert!(
        consent_page
            .text()
            .await
            .expect("page")
            .contains("id=\"deny\"")
    );
    let mut form = query(&link.authorization_url);
    form.insert("decision".into(), "deny".into());
    let denied = browser()
        .post(format!("{}/-/oauth_authorize", instance.sandbox_url))
        .form(&form)
        .send()
        .await
        .expect("sandbox answers");
    assert_eq!(denied.status(), 302);
    let callback_url = location(&denied);
    assert_eq!(query(&callback_url)["error"], "access_denied");
    let (status, _, page) = callback(&callback_url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("You declined"), "{page}");
    assert_eq!(
        instance.account("asana", "carol@acme.test").await,
        Err(Code::NotFound)
    );
    // The state was spent by the refusal.
    let (again, _, _) = callback(&callback_url).await;
    assert_eq!(again, 400);
}

#[tokio::test]
async fn an_expired_state_is_refused() {
    let instance = Instance::start("sqlite", true, "0s").await;
    let link = instance
        .link("asana", "dave@acme.test", None)
        .await
        .expect("link");
    let callback_url = consent(&link.authorization_url).await;
    let (status, _, page) = callback(&callback_url).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("expired"), "{page}");
    assert_eq!(
        instance.account("asana", "dave@acme.test").await,
        Err(Code::NotFound)
    );
    // The sweeper forgets expired consents, used or not.
    instance
        .link("asana", "dave@acme.test", None)
        .await
        .expect("another link");
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async { instance.oauth_state_rows().await.is_empty() },
        "expired pending consents are deleted"
    );
}

#[tokio::test]
async fn a_failed_exchange_stores_nothing() {
    let instance = Instance::start("sqlite", true, "10m").await;
    let link = instance
        .link("asana", "erin@acme.test", None)
        .await
        .expect("link");
    let callback_url = consent(&link.authorization_url).await;
    // The client secret no longer matches: the sandbox refuses the exchange.
    instance.sandbox.tokens().register_app(App {
        client_id: "test-rest-app".into(),
        client_secret: random_secret(),
        name: "rotated".into(),
        kind: AppKind::Rest,
        redirect_uris: vec![query(&link.authorization_url)["redirect_uri"].clone()],
    });
    let (status, _, page) = callback(&callback_url).await;
    assert_eq!(status, 502, "{page}");
    assert!(page.contains("nothing was connected"), "{page}");
    assert_eq!(
        instance.account("asana", "erin@acme.test").await,
        Err(Code::NotFound)
    );
}

#[tokio::test]
async fn return_urls_must_be_allow_listed() {
    let instance = Instance::start("sqlite", true, "10m").await;
    for off_list in [
        "https://evil.test/connected",
        "https://app.acme.test/connected.evil.test/",
        "javascript:alert(1)",
        "not a url",
    ] {
        let refused = instance
            .link("asana", "frank@acme.test", Some(off_list))
            .await
            .expect_err(off_list);
        assert_eq!(refused.code(), Code::InvalidArgument, "{off_list}");
    }
    let wrong_kind = instance
        .link("asana-pat", "frank@acme.test", None)
        .await
        .expect_err("PAT connections have no link");
    assert_eq!(wrong_kind.code(), Code::FailedPrecondition);

    let return_url = format!("{RETURN_PREFIX}/done?tab=1");
    let link = instance
        .link("asana", "frank@acme.test", Some(&return_url))
        .await
        .expect("link");
    let callback_url = consent(&link.authorization_url).await;
    let (status, location, _) = callback(&callback_url).await;
    assert_eq!(status, 303);
    let location = location.expect("Location");
    assert!(location.starts_with(&return_url), "{location}");
    assert_eq!(query(&location)["connected"], "asana");
    assert_eq!(query(&location)["tab"], "1");
    assert!(!location.contains("code=") && !location.contains("state="));
    let account = instance
        .account("asana", "frank@acme.test")
        .await
        .expect("account");
    assert_eq!(account.state, pb::AccountState::Active as i32);
}

#[tokio::test]
async fn refresh_and_disconnect_are_audited_with_the_account_and_version() {
    let instance = Instance::start("sqlite", true, "10m").await;
    let link = instance
        .link("asana", "alice@acme.test", None)
        .await
        .expect("link");
    let (status, _, page) = callback(&consent(&link.authorization_url).await).await;
    assert_eq!(status, 200, "{page}");
    let mut client = instance.client();
    let request = pb::GetAccessTokenRequest {
        tenant: TENANT.into(),
        connection_name: "asana".into(),
        identifier: "alice@acme.test".into(),
        // Longer than the token lives: token-vault must refresh first.
        min_valid_for: Some(prost_types::Duration {
            seconds: 7200,
            nanos: 0,
        }),
    };
    let refreshed = client
        .get_access_token(request)
        .await
        .expect("refreshed")
        .into_inner();
    assert_eq!(refreshed.credential_version, 2);

    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            !instance
                .audit
                .events(TENANT, "credential.refreshed")
                .await
                .is_empty()
        },
        "credential.refreshed reaches audit-log"
    );
    let events = instance.audit.events(TENANT, "credential.refreshed").await;
    let credential = events[0].credential.clone().expect("credential named");
    assert_eq!(credential.account_id, refreshed.account_id);
    assert_eq!(credential.version, 2);

    client
        .disconnect_account(pb::DisconnectAccountRequest {
            tenant: TENANT.into(),
            connection_name: "asana".into(),
            identifier: "alice@acme.test".into(),
            reason: "user asked".into(),
        })
        .await
        .expect("disconnected");
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            !instance
                .audit
                .events(TENANT, "credential.revoked")
                .await
                .is_empty()
        },
        "credential.revoked reaches audit-log"
    );
    let revoked = instance.audit.events(TENANT, "credential.revoked").await;
    assert_eq!(
        revoked[0].credential.as_ref().map(|c| c.account_id.clone()),
        Some(refreshed.account_id.clone())
    );
    let actor = |event: &audit_pb::Event| {
        let actor = event.actor.clone().expect("actor");
        (actor.service, actor.identifier)
    };
    assert_eq!(
        actor(&revoked[0]),
        ("token-vault".to_owned(), "acme-agent".to_owned()),
        "token-vault records in its own name, naming the caller that disconnected"
    );
    assert_eq!(
        revoked[0].subject.as_ref().map(|s| s.identifier.as_str()),
        Some("alice@acme.test")
    );

    client
        .delete_tenant(pb::DeleteTenantRequest {
            tenant: TENANT.into(),
            confirm_tenant: TENANT.into(),
        })
        .await
        .expect("deleted by an operator");
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(10),
        async {
            !instance
                .audit
                .events(TENANT, "tenant.deleted")
                .await
                .is_empty()
        },
        "tenant.deleted reaches audit-log"
    );
    let deleted = instance.audit.events(TENANT, "tenant.deleted").await;
    assert_eq!(
        actor(&deleted[0]),
        ("token-vault".to_owned(), "acme-agent".to_owned()),
        "a tenant deletion names the operator"
    );
    let audited = format!("{events:?}{revoked:?}");
    assert!(
        !audited.contains(&refreshed.access_token),
        "no token in an audit row"
    );
}

#[tokio::test]
async fn a_consent_as_another_asana_user_is_refused_unless_the_link_replaces_it() {
    let instance = Instance::start("sqlite", true, "10m").await;
    let api = format!("{}/api/1.0", instance.sandbox_url);
    let alice = asana_me(&api, ALICE_PAT).await.expect("alice");
    let bob = asana_me(&api, BOB_PAT).await.expect("bob");
    let consent_as = |url: String, user: &str| {
        let url = format!("{url}&sandbox_user={user}");
        async move { callback(&consent(&url).await).await }
    };
    let link = instance
        .link("asana", "user_42", None)
        .await
        .expect("link")
        .authorization_url;
    let (status, _, page) = consent_as(link, &alice.0).await;
    assert_eq!(status, 200, "{page}");
    let connected = instance.account("asana", "user_42").await.expect("account");
    assert_eq!(connected.asana_user_gid, alice.0);

    // Somebody else opens the next link of user_42 and signs in as bob.
    let link = instance
        .link("asana", "user_42", None)
        .await
        .expect("link")
        .authorization_url;
    let (status, _, page) = consent_as(link, &bob.0).await;
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("nothing was changed"), "{page}");
    let kept = instance.account("asana", "user_42").await.expect("account");
    assert_eq!(
        kept.asana_user_gid, alice.0,
        "the account still acts as alice"
    );
    assert_eq!(kept.credential_version, connected.credential_version);
    instance
        .audit
        .granted_eventually("the refused consent is audited", |e| {
            e.outcome == audit_pb::Outcome::Denied as i32
        })
        .await;

    // A link made to replace the user may.
    let link = instance
        .link_replacing("asana", "user_42", None, true)
        .await
        .expect("link")
        .authorization_url;
    let (status, _, page) = consent_as(link, &bob.0).await;
    assert_eq!(status, 200, "{page}");
    let replaced = instance.account("asana", "user_42").await.expect("account");
    assert_eq!(replaced.asana_user_gid, bob.0);
    instance
        .audit
        .granted_eventually(
            "the replacement is audited with the user it replaced",
            |e| {
                e.details_json
                    .contains(&format!("\"replaced_asana_user_gid\":\"{}\"", alice.0))
            },
        )
        .await;
}

#[tokio::test]
async fn a_token_of_another_asana_user_is_refused_unless_the_put_replaces_it() {
    use tonic_types::StatusExt as _;

    let instance = Instance::start("sqlite", true, "10m").await;
    let api = format!("{}/api/1.0", instance.sandbox_url);
    let alice = asana_me(&api, ALICE_PAT).await.expect("alice");
    let bob = asana_me(&api, BOB_PAT).await.expect("bob");
    let put = |token: &str, replace_user: bool| pb::PutCredentialRequest {
        tenant: "acme".into(),
        connection_name: "asana-pat".into(),
        identifier: "user_42".into(),
        token: token.into(),
        replace_user,
    };
    let mut client = instance.client();
    client
        .put_credential(put(ALICE_PAT, false))
        .await
        .expect("alice's token");

    let refused = client
        .put_credential(put(BOB_PAT, false))
        .await
        .expect_err("bob's token for alice's account");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.get_details_error_info().map(|info| info.reason),
        Some("ASANA_USER_MISMATCH".to_owned())
    );
    let kept = instance
        .account("asana-pat", "user_42")
        .await
        .expect("account");
    assert_eq!(
        (kept.asana_user_gid.as_str(), kept.credential_version),
        (alice.0.as_str(), 1),
        "the account still acts as alice, on its first credential"
    );
    instance
        .audit
        .granted_eventually(
            "the refused token is audited with the user it acts as",
            |e| {
                e.outcome == audit_pb::Outcome::Denied as i32
                    && e.details_json
                        .contains(&format!("\"presented_asana_user_gid\":\"{}\"", bob.0))
            },
        )
        .await;

    let replaced = client
        .put_credential(put(BOB_PAT, true))
        .await
        .expect("a put that replaces the user")
        .into_inner()
        .account
        .expect("account");
    assert_eq!(replaced.asana_user_gid, bob.0);
    assert_eq!(replaced.credential_version, 2);
    instance
        .audit
        .granted_eventually(
            "the replacement is audited with the user it replaced",
            |e| {
                e.details_json
                    .contains(&format!("\"replaced_asana_user_gid\":\"{}\"", alice.0))
            },
        )
        .await;
    let audited = format!(
        "{:?}",
        instance.audit.events(TENANT, "credential.granted").await
    );
    assert!(
        !audited.contains(ALICE_PAT) && !audited.contains(BOB_PAT),
        "no token in an audit row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_callback_query_is_refused_clearly_and_changes_nothing() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let instance = Instance::start("sqlite", true, "10m").await;
    instance
        .link("asana", "alice@acme.test", None)
        .await
        .expect("a pending consent that must survive");
    let pending = instance.oauth_state_rows().await;
    let value = prop_oneof![
        Just("<script>alert(1)</script>".to_owned()),
        Just("access_denied".to_owned()),
        Just("%00%ff".to_owned()),
        any::<String>(),
    ];
    let key = prop_oneof![
        Just("state".to_owned()),
        Just("code".to_owned()),
        Just("error".to_owned()),
        Just("error_description".to_owned()),
        any::<String>(),
    ];
    let queries = proptest::collection::vec((key, value), 0..5);
    let http = reqwest::Client::new();
    let runtime = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config::with_cases(128));
    tokio::task::block_in_place(|| {
        runner
            .run(&queries, |pairs| {
                let mut url = reqwest::Url::parse(&instance.callback_url).expect("url");
                url.query_pairs_mut().extend_pairs(&pairs);
                let (status, page) = runtime.block_on(async {
                    let response = http
                        .get(url.clone())
                        .send()
                        .await
                        .expect("callback answers");
                    (
                        response.status().as_u16(),
                        response.text().await.expect("body"),
                    )
                });
                prop_assert!(status == 400, "{status} for {url}: {page}");
                prop_assert!(
                    !page.contains("<script>"),
                    "an input was reflected unescaped"
                );
                Ok(())
            })
            .expect("every query is refused with a clear page");
    });
    assert_eq!(
        instance.oauth_state_rows().await,
        pending,
        "no state was used up or added"
    );
    assert_eq!(
        instance.account("asana", "alice@acme.test").await,
        Err(Code::NotFound)
    );
}
