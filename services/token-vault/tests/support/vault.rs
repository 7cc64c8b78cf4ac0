//! Shared by the integration tests (`tests/integration/`) and `benches/access_token.rs`: an in-process
//! Asana sandbox and `replicas` token-vault instances sharing one OpenBao prefix and one
//! database (PostgreSQL or SQLite), with an `asana` OAuth connection and an `asana-pat` one.

use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_launch::Service as _;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::connections::{self, OAuthApp};
use agentauth_testkit::openbao;
use asana_sandbox::{App, AppKind, Sandbox};
use figment::providers::{Format as _, Toml};
use token_vault::{Config, TokenVaultService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "acme";
pub const ALICE: &str = "alice@acme.test";

#[path = "db.rs"]
pub mod db;

pub use db::Db;

#[path = "secrets.rs"]
pub mod secrets;

#[path = "audit.rs"]
pub mod audit;

/// An in-process Asana sandbox on a free port, serving until `shutdown`, and its base URL.
pub async fn sandbox(auto_approve: bool, shutdown: &CancellationToken) -> (Sandbox, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let sandbox = Sandbox::new(asana_sandbox::Config {
        public_url: url.clone(),
        auto_approve,
        ..asana_sandbox::Config::default()
    });
    tokio::spawn(sandbox.clone().serve(listener, shutdown.clone()));
    (sandbox, url)
}

/// How a [`Setup`] is started.
pub struct Options<'a> {
    /// `postgres` or `sqlite`.
    pub backend: &'a str,
    pub replicas: usize,
    /// Whether the sandbox approves consents at once.
    pub auto_approve: bool,
    pub sweep_interval: &'a str,
    /// `[vault] timeout`.
    pub vault_timeout: &'a str,
    /// Where token-vault records its audit events; nowhere when `None`.
    pub audit: Option<&'a audit::AuditLog>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            backend: "sqlite",
            replicas: 1,
            auto_approve: true,
            sweep_interval: "1h",
            vault_timeout: "5s",
            audit: None,
        }
    }
}

/// A sandbox and token-vault replicas sharing one Vault prefix and one database.
pub struct Setup {
    pub sandbox: Sandbox,
    pub sandbox_url: String,
    /// Each replica's gRPC address.
    pub replicas: Vec<String>,
    /// connector-executor's key (role `executor`: may call `GetAccessToken`).
    pub reader: ApiKey,
    /// An application's key for tenant `acme` (role `onboarding`).
    pub agent: ApiKey,
    /// An operator's key for tenant `acme` (role `operator`).
    pub operator: ApiKey,
    /// A token reader (role `executor`) bound to tenant `globex` only.
    pub other_tenant_reader: ApiKey,
    /// Every replica's configuration.
    pub config_text: String,
    /// The OAuth app's client secret, as registered at the sandbox.
    pub client_secret: String,
    shutdown: CancellationToken,
    _db: Db,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Setup {
    /// The sweeper stays out of the way (every hour).
    pub async fn start(backend: &str, replicas: usize, auto_approve: bool) -> Self {
        Self::start_sweeping(backend, replicas, auto_approve, "1h").await
    }

    /// Like `start`, with the sweeper running every `sweep_interval`.
    pub async fn start_sweeping(
        backend: &str,
        replicas: usize,
        auto_approve: bool,
        sweep_interval: &str,
    ) -> Self {
        Self::start_with(Options {
            backend,
            replicas,
            auto_approve,
            sweep_interval,
            ..Options::default()
        })
        .await
    }

    /// A setup as `options` say.
    pub async fn start_with(options: Options<'_>) -> Self {
        let Options {
            backend,
            replicas,
            auto_approve,
            sweep_interval,
            vault_timeout,
            audit,
        } = options;
        let db = Db::create(backend).await;
        let shutdown = CancellationToken::new();
        let (sandbox, sandbox_url) = sandbox(auto_approve, &shutdown).await;

        let mut callbacks = Vec::new();
        for _ in 0..replicas {
            callbacks.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let redirect = format!(
            "http://{}/oauth/callback",
            callbacks[0].local_addr().expect("address")
        );
        let client_secret = format!("secret-{}", ApiKey::generate().expose());
        sandbox.tokens().register_app(App {
            client_id: "test-rest-app".to_owned(),
            client_secret: client_secret.clone(),
            name: "token-vault test app".to_owned(),
            kind: AppKind::Rest,
            redirect_uris: vec![redirect.clone()],
        });
        let prefix = openbao::fresh_prefix();
        let vault = openbao::shared();
        secrets::write_client_secret(&prefix, "asana", &client_secret).await;

        let (reader, agent, operator) =
            (ApiKey::generate(), ApiKey::generate(), ApiKey::generate());
        let other_tenant_reader = ApiKey::generate();
        let api = format!("{sandbox_url}/api/1.0");
        let app = OAuthApp {
            asana: &sandbox_url,
            client_id: "test-rest-app",
            client_secret: &format!("vault:secret/data/{prefix}/apps/asana#client_secret"),
            redirect_url: &redirect,
            revocable: true,
        };
        let connections = app.rest("asana", &api) + &connections::pat("asana-pat", &api);
        let config_text = format!(
            r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{reader_hash}"
tenants = ["*"]
roles = ["executor"]

[[server.callers]]
name = "acme-agent"
key_sha256 = "{agent_hash}"
tenants = ["{TENANT}"]
roles = ["onboarding"]

[[server.callers]]
name = "operator"
key_sha256 = "{operator_hash}"
tenants = ["{TENANT}"]
roles = ["operator"]

[[server.callers]]
name = "globex-executor"
key_sha256 = "{other_reader_hash}"
tenants = ["globex"]
roles = ["executor"]

[vault]
addr = "{vault_addr}"
path_prefix = "{prefix}"
timeout = "{vault_timeout}"

[database]
url = "{db_url}"

[oauth]
refresh_margin = "5m"
sweep_interval = "{sweep_interval}"
sweep_concurrency = 2
{connections}"#,
            reader_hash = reader.hash(),
            agent_hash = agent.hash(),
            operator_hash = operator.hash(),
            other_reader_hash = other_tenant_reader.hash(),
            vault_addr = vault.addr(),
            db_url = db.url(),
        );
        let mut addresses = Vec::new();
        for (replica, callback) in callbacks.into_iter().enumerate() {
            let replica_text =
                config_text.clone() + &audit.map(|a| a.section(replica)).unwrap_or_default();
            let config: Config = figment::Figment::from(Toml::string(&replica_text))
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
            operator,
            other_tenant_reader,
            config_text,
            client_secret,
            shutdown,
            _db: db,
        }
    }

    /// Vault's credentials as the replicas see them (acting with the root token).
    pub fn secrets(&self) -> token_vault::secrets::Secrets {
        let config: Config = figment::Figment::from(Toml::string(&self.config_text))
            .extract()
            .expect("valid config");
        token_vault::secrets::Secrets::new(&config.vault, openbao::shared().token())
            .expect("secrets")
    }

    pub fn client(&self, replica: usize, key: &ApiKey) -> TokenVaultClient<AuthenticatedChannel> {
        TokenVaultClient::new(channel(&self.replicas[replica], Some(key)).expect("channel"))
    }

    /// A fresh authorization link for alice on `asana`.
    pub async fn link(&self) -> String {
        self.link_for(ALICE).await
    }

    /// A fresh authorization link for `identifier` on `asana`.
    pub async fn link_for(&self, identifier: &str) -> String {
        self.client(0, &self.agent)
            .create_authorization_link(pb::CreateAuthorizationLinkRequest {
                tenant: TENANT.into(),
                connection_name: "asana".into(),
                identifier: identifier.into(),
                return_url: None,
                replace_user: false,
            })
            .await
            .expect("link")
            .into_inner()
            .authorization_url
    }

    /// Connects alice over the OAuth flow (needs an auto-approving sandbox).
    pub async fn connect_alice(&self) {
        self.connect(ALICE).await;
    }

    /// Connects `identifier` over the OAuth flow (needs an auto-approving sandbox).
    pub async fn connect(&self, identifier: &str) {
        let link = self.link_for(identifier).await;
        self.complete_consent(&link).await;
    }

    /// Opens `link` as the user's browser would (an auto-approving sandbox consents at once)
    /// and follows the redirect to token-vault's callback.
    pub async fn complete_consent(&self, link: &str) {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let consent = browser.get(link).send().await.expect("sandbox answers");
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

    /// alice's account on `connection`.
    pub async fn account(&self, connection: &str) -> pb::Account {
        self.client(0, &self.agent)
            .get_account(pb::GetAccountRequest {
                tenant: TENANT.into(),
                connection_name: connection.into(),
                identifier: ALICE.into(),
            })
            .await
            .expect("account")
            .into_inner()
            .account
            .expect("account")
    }

    /// Refreshes served by the sandbox so far.
    pub fn refreshes(&self) -> u64 {
        self.sandbox.0.limits.stats()["refreshes_total"]
            .as_u64()
            .unwrap_or(0)
    }
}
