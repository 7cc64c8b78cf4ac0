//! token-vault: per-user Asana credentials in Vault: connect, refresh, re-prompt, revoke.
//!
//! Secrets live only in Vault ([`secrets`]: Transit-encrypted per tenant, then KV v2 with
//! check-and-set); the database holds account records without secrets (`records`).

mod api;
mod audit;
mod changes;
mod connections;
mod error;
mod oauth;
mod records;
mod refresh;
mod rotation;
pub mod secrets;
mod sweep;
mod vault;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agentauth_grpc::{Api, Policy, Readiness, Role, Server, ServerConfig};
use agentauth_proto::vault::v1::token_vault_server::{SERVICE_NAME, TokenVaultServer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::Error;

/// How long validating a token against Asana may take before Asana counts as unavailable.
const ASANA_TIMEOUT: Duration = Duration::from_secs(10);

/// The accounts' schema, per backend.
static MIGRATIONS: agentauth_db::Migrations = agentauth_db::Migrations {
    postgres: sqlx::migrate!("./migrations/postgres"),
    sqlite: sqlx::migrate!("./migrations/sqlite"),
};

/// token-vault's configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC listener and its callers.
    pub server: ServerConfig,
    /// Where credentials are kept.
    pub vault: vault::Config,
    /// Where account records (never secrets) are kept.
    pub database: records::Config,
    /// Where audit events go; absent means auditing is off (said once at start).
    pub audit: audit::Config,
    /// Every way agentauth reaches Asana; other services read these through the API. An OAuth
    /// connection's `client_secret` is a Vault reference `vault:<mount>/data/<path>#<field>`
    /// (a KV v2 secret the operator writes, e.g. `bao kv put -mount=secret <path>
    /// <field>=…`), read when a code is exchanged; the secret itself is never in this file.
    pub connections: Vec<connections::Connection>,
    /// OAuth: the HTTP callback listener (`http_listen`, serving `/oauth/callback`), the
    /// `return_url_allowlist`, the authorization links' `link_lifetime`, the
    /// `refresh_margin` within which `GetAccessToken` and the sweeper refresh a token first,
    /// and the sweeper's `sweep_interval` (±20% jitter) and `sweep_concurrency`.
    pub oauth: oauth::Config,
    /// The account change log's stream (`WatchAccountChanges`): `poll_interval` for changes
    /// made on other replicas, `heartbeat`, and `retention` of changes for subscribers that
    /// reconnect.
    pub changes: changes::Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            vault: vault::Config::default(),
            database: records::Config::new("sqlite://token-vault.db?mode=rwc"),
            audit: audit::Config::default(),
            connections: Vec::new(),
            oauth: oauth::Config::default(),
            changes: changes::Config::default(),
        }
    }
}

/// A configuration read from TOML text alone, as the binary reads its file (unit tests).
#[cfg(test)]
fn parse_config(text: &str) -> Result<Config, String> {
    use figment::providers::Format as _;
    figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}

/// token-vault's RPCs and roles. Access tokens leave only through `executor` (the role of
/// connector-executor); no other role includes `GetAccessToken` or `ReportRejectedToken`.
pub const POLICY: Policy = Policy {
    service: SERVICE_NAME,
    rpcs: &[
        "CreateAuthorizationLink",
        "PutCredential",
        "GetAccessToken",
        "ReportRejectedToken",
        "GetAccount",
        "ListAccounts",
        "GetIdentityStatus",
        "DisconnectAccount",
        "DeleteTenant",
        "GetConnection",
        "ListConnections",
        "WatchAccountChanges",
        "PutWebhookSecret",
        "GetWebhookSecret",
        "DeleteWebhookSecret",
        "RotateTenantKey",
    ],
    roles: &[
        Role {
            name: "executor",
            purpose: "connector-executor: tokens for the calls it runs, account changes, connections, the secrets of the webhooks it registers",
            rpcs: &[
                "GetAccessToken",
                "ReportRejectedToken",
                "WatchAccountChanges",
                "GetConnection",
                "ListConnections",
                "PutWebhookSecret",
                "GetWebhookSecret",
                "DeleteWebhookSecret",
            ],
        },
        Role {
            name: "onboarding",
            purpose: "an application that connects its users: consent links, PATs, account status",
            rpcs: &[
                "CreateAuthorizationLink",
                "PutCredential",
                "GetAccount",
                "ListAccounts",
                "GetIdentityStatus",
                "GetConnection",
                "ListConnections",
            ],
        },
        Role {
            name: "reader",
            purpose: "dashboards and support: accounts and connections",
            rpcs: &[
                "GetAccount",
                "ListAccounts",
                "GetIdentityStatus",
                "GetConnection",
                "ListConnections",
            ],
        },
        Role {
            name: "operator",
            purpose: "administrators: onboarding, disconnecting accounts, deleting tenants, rotating their keys; never tokens",
            rpcs: &[
                "CreateAuthorizationLink",
                "PutCredential",
                "GetAccount",
                "ListAccounts",
                "GetIdentityStatus",
                "GetConnection",
                "ListConnections",
                "DisconnectAccount",
                "DeleteTenant",
                "RotateTenantKey",
            ],
        },
    ],
};

/// The token-vault service, configured and ready to serve.
#[derive(Debug)]
pub struct TokenVaultService {
    server: Server,
    listen: SocketAddr,
    shutdown_grace: Duration,
    vault: vault::Vault,
    session: Arc<vault::Session>,
    secrets: Arc<secrets::Secrets>,
    records: records::Store,
    audit: Arc<audit::Audit>,
    audit_url: String,
    connections: Arc<connections::Registry>,
    oauth: oauth::Config,
    changes: changes::Config,
    /// How long a Vault request may take.
    vault_timeout: Duration,
    /// The OAuth callback's listener when one was handed over; else `oauth.http_listen` is bound.
    callback_listener: Option<TcpListener>,
}

impl TokenVaultService {
    /// Prepares the service acting on Vault with `vault_token` (the binary reads it from
    /// `VAULT_TOKEN`) or, with `[vault.auth] method = "kubernetes"`, with the token its login
    /// gets (`vault_token` is then ignored). Must be called inside a Tokio runtime when auditing
    /// is enabled.
    pub fn with_vault_token(config: Config, vault_token: &str) -> anyhow::Result<Self> {
        let listen = config.server.listen;
        let shutdown_grace = config.server.shutdown_grace;
        let server = Server::new(
            <Self as agentauth_launch::Service>::NAME,
            config.server,
            &[&POLICY],
        )?;
        let vault_timeout = config.vault.timeout;
        let vault = vault::Vault::new(&config.vault)?;
        let session =
            vault::Session::new(&config.vault, vault_token).map_err(anyhow::Error::msg)?;
        let secrets = secrets::Secrets::with_session(&config.vault, session.clone())
            .map_err(anyhow::Error::msg)?;
        let records = records::Store::connect_lazy(&config.database)?;
        let connections =
            connections::Registry::new(config.connections).map_err(anyhow::Error::msg)?;
        let audit_url = config.audit.emitter.url.clone();
        let audit = audit::Audit::start(config.audit)?;
        Ok(Self {
            server,
            listen,
            shutdown_grace,
            vault,
            session,
            secrets: Arc::new(secrets),
            records,
            audit: Arc::new(audit),
            audit_url,
            connections: Arc::new(connections),
            oauth: config.oauth,
            changes: config.changes,
            vault_timeout,
            callback_listener: None,
        })
    }

    /// Serves the OAuth callback on `listener` (already bound, e.g. to port 0 in tests)
    /// instead of binding `oauth.http_listen`.
    pub fn with_callback_listener(mut self, listener: TcpListener) -> Self {
        self.callback_listener = Some(listener);
        self
    }
}

impl agentauth_launch::Service for TokenVaultService {
    const NAME: &'static str = "token-vault";
    const ENV_PREFIX: &'static str = "TOKEN_VAULT";
    /// vaultrs logs every non-2xx answer at error level, including the expected "not found"
    /// of a first write; token-vault reports the failures that matter itself.
    const LOG_DIRECTIVES: &'static str = "vaultrs=off,rustify=off";
    type Config = Config;

    fn new(config: Config) -> anyhow::Result<Self> {
        let token = std::env::var("VAULT_TOKEN").unwrap_or_default();
        Self::with_vault_token(config, &token)
    }

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn access(&self) -> Vec<agentauth_grpc::Access> {
        self.server.access()
    }

    /// Brings the schema up to date (retrying while the database is unreachable), then serves.
    async fn run(self, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.audit.log_mode(&self.audit_url, "credential changes");
        // The Vault token: logged in (or looked up), renewed, replaced, while the service runs.
        let maintaining = tokio::spawn(self.session.clone().maintain(shutdown.clone()));
        let migrated = self
            .records
            .database()
            .migrate_until_done(&MIGRATIONS, "the accounts database", &shutdown)
            .await;
        if !migrated {
            // Only a shutdown stops the migrations, and it stops the token's upkeep too.
            return Ok(());
        }
        // No redirects: one to another host would carry a token or client secret there.
        let http = reqwest::Client::builder()
            .timeout(ASANA_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("cannot create the HTTP client: {e}"))?;
        let oauth = Arc::new(oauth::Flow {
            config: self.oauth.clone(),
            connections: self.connections.clone(),
            secrets: self.secrets.clone(),
            records: self.records.clone(),
            audit: self.audit.clone(),
            http: http.clone(),
        });
        let callback_listener = match self.callback_listener {
            Some(listener) => listener,
            None => TcpListener::bind(self.oauth.http_listen)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot listen for OAuth callbacks on {}: {e}",
                        self.oauth.http_listen
                    )
                })?,
        };
        let callback_address = callback_listener
            .local_addr()
            .map_err(|e| anyhow::anyhow!("the OAuth callback listener has no address: {e}"))?;
        tracing::info!(
            listen = %callback_address,
            path = oauth::CALLBACK_PATH,
            "serving the OAuth callback"
        );
        let callbacks = tokio::spawn(
            axum::serve(callback_listener, oauth.clone().router())
                .with_graceful_shutdown(shutdown.clone().cancelled_owned())
                .into_future(),
        );
        let refresher = Arc::new(refresh::Refresher {
            secrets: self.secrets.clone(),
            records: self.records.clone(),
            audit: self.audit.clone(),
            oauth: oauth.clone(),
            refreshes: refresh::refreshes_counter(&opentelemetry::global::meter("token-vault")),
        });
        let sweeper = Arc::new(sweep::Sweeper {
            refresher: refresher.clone(),
            connections: self.connections.clone(),
            records: self.records.clone(),
            interval: self.oauth.sweep_interval,
            margin: self.oauth.refresh_margin,
            concurrency: self.oauth.sweep_concurrency,
            change_retention: self.changes.retention,
        });
        let sweeping = tokio::spawn(sweeper.run(shutdown.clone()));
        let changes = changes::Changes::new(self.records.clone(), self.changes.clone());
        let tailing = tokio::spawn(changes.clone().tail(shutdown.clone()));
        let api = Api {
            routes: tonic::service::Routes::new(TokenVaultServer::new(api::TokenVaultApi {
                connections: self.connections.clone(),
                secrets: self.secrets.clone(),
                records: self.records.clone(),
                audit: self.audit.clone(),
                http,
                refresher,
                refresh_margin: self.oauth.refresh_margin,
                oauth,
                changes,
                rotation_settle: self.vault_timeout * 2,
            })),
            descriptors: agentauth_proto::FILE_DESCRIPTOR_SET,
        };
        let dependencies = Dependencies {
            vault: self.vault,
            session: self.session,
            records: self.records,
            audit: self.audit.clone(),
        };
        let served = self
            .server
            .serve(listener, api, dependencies, shutdown.clone())
            .await;
        // The callback server stops with the same shutdown (or now, if gRPC failed).
        shutdown.cancel();
        if let Err(error) = sweeping.await {
            tracing::warn!(%error, "the sweeper panicked");
        }
        if let Err(error) = tailing.await {
            tracing::warn!(%error, "the account change tailer panicked");
        }
        if let Err(error) = maintaining.await {
            tracing::warn!(%error, "the vault token's upkeep panicked");
        }
        let callbacks = callbacks
            .await
            .map_err(|e| anyhow::anyhow!("the OAuth callback server panicked: {e}"));
        self.audit.shutdown(self.shutdown_grace).await;
        served?;
        callbacks?.map_err(|e| anyhow::anyhow!("the OAuth callback server failed: {e}"))?;
        Ok(())
    }
}

/// Ready while Vault is unsealed and token-vault holds a valid token for it, the database
/// answers and the audit emitter keeps up.
struct Dependencies {
    vault: vault::Vault,
    session: Arc<vault::Session>,
    records: records::Store,
    audit: Arc<audit::Audit>,
}

impl Readiness for Dependencies {
    async fn check(&self) -> Result<(), String> {
        self.vault.check().await?;
        self.session.check()?;
        if !self.audit.keeps_up() {
            return Err("the audit emitter does not keep up".to_owned());
        }
        self.records
            .database()
            .ping()
            .await
            .map_err(|e| format!("accounts database: {e}"))
    }
}
