//! The whole system in one test process: an in-process Asana sandbox, the shared OpenBao,
//! token-vault, audit-log and connector-executor, each on its own port, wired as in
//! production (API keys, gRPC, the audit emitter), plus helpers to connect accounts.
//!
//! Connections token-vault declares: `asana` (REST, OAuth app), `asana-pat` (REST, PATs),
//! `asana-mcp` (MCP, OAuth app, the sandbox's `/v2/mcp`), and `peer-mcp` (MCP, the sandbox's
//! OAuth, the server at `Options::peer_mcp_url`) when one is given.

#![allow(dead_code)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_grpc::{ApiKey, CallerConfig, ServerConfig};
use agentauth_launch::Service as _;
use agentauth_proto::audit::v1 as audit_pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_proto::executor::v1 as pb;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use agentauth_proto::vault::v1 as vault_pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_proto::watcher::v1::schema_watcher_client::SchemaWatcherClient;
use agentauth_testkit::connections::{self, OAuthApp};
use agentauth_testkit::database::{PostgresDatabase, SqliteDatabase};
use agentauth_testkit::openbao;
use asana_sandbox::{App, AppKind, Sandbox};
use figment::providers::{Format as _, Toml};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const TENANT: &str = "acme";
/// The tools `System::read_only_agent` may use.
pub const READ_ONLY_TOOLS: [&str; 3] = [
    "asana_task_get",
    "asana_api_get_task",
    "asana_proxy_unlisted_path",
];
pub const OTHER_TENANT: &str = "globex";

/// How to start the system.
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra TOML appended to connector-executor's configuration.
    pub executor_toml: String,
    /// How long the sandbox's OAuth access tokens live.
    pub token_lifetime: Duration,
    /// The MCP server behind the `peer-mcp` connection, if any.
    pub peer_mcp_url: Option<String>,
    /// Whether connector-executor sends audit events to audit-log.
    pub audit: bool,
    /// The API base of the `asana-pat` connection when not the sandbox's own (e.g. a Prism
    /// proxy in front of it).
    pub rest_api_base_url: Option<String>,
    /// The socket the sandbox serves on, bound beforehand so that something placed in front
    /// of it (see `rest_api_base_url`) can know its address; a fresh one when `None`.
    pub sandbox_listener: Option<Arc<std::net::TcpListener>>,
    /// The sandbox's per-token limits.
    pub sandbox_limits: asana_sandbox::LimitConfig,
    /// How long connector-executor's audit emitter lets a batch fill (short, so tests see
    /// events soon).
    pub audit_flush_interval: Duration,
    /// How many connector-executor replicas serve (all on the one token-vault).
    pub executor_replicas: usize,
    /// connector-executor's `[audit] durability`: `async` or `sync`.
    pub audit_durability: &'static str,
    /// Whether connector-executor pins MCP tools through a schema-watcher (started later, by
    /// [`System::start_watcher`], on an address fixed now).
    pub watcher: bool,
    /// How many tools one page of the sandbox's MCP `tools/list` holds.
    pub sandbox_mcp_page_size: usize,
    /// Virtual MCP: the keys of `[virtual_mcp]` besides `listen`, for each replica in turn
    /// (the last for the rest); each replica gets its own port
    /// ([`System::virtual_mcp_urls`]).
    pub virtual_mcp_toml: Vec<String>,
    /// Webhooks: each replica's intake on its own port ([`System::webhook_urls`]), its
    /// `public_url` the next replica's intake; `webhooks_toml` adds keys to `[webhooks]`.
    pub webhooks: bool,
    pub webhooks_toml: String,
    /// How long the sandbox lets a webhook fail before it deletes it.
    pub sandbox_webhook_failure_window: Duration,
    /// Whether every replica's `[database]` (one store, with virtual MCP or webhooks) is
    /// PostgreSQL rather than one SQLite file.
    pub database_postgres: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            executor_toml: String::new(),
            token_lifetime: Duration::from_secs(3600),
            peer_mcp_url: None,
            audit: true,
            rest_api_base_url: None,
            sandbox_listener: None,
            sandbox_limits: asana_sandbox::LimitConfig::default(),
            audit_flush_interval: Duration::from_millis(20),
            executor_replicas: 1,
            audit_durability: "async",
            watcher: false,
            sandbox_mcp_page_size: asana_sandbox::Config::default().mcp_page_size,
            virtual_mcp_toml: Vec::new(),
            webhooks: false,
            webhooks_toml: String::new(),
            sandbox_webhook_failure_window: asana_sandbox::Config::default().webhook_failure_window,
            database_postgres: false,
        }
    }
}

/// The running system; dropping it stops every service.
pub struct System {
    pub sandbox: Sandbox,
    pub sandbox_url: String,
    pub executor_url: String,
    /// Every connector-executor replica's URL (the first is `executor_url`).
    pub executor_urls: Vec<String>,
    /// Every replica's virtual MCP listener, `http://host:port`, with `Options::virtual_mcp_toml`.
    pub virtual_mcp_urls: Vec<String>,
    /// Every replica's webhook intake, `http://host:port`, with `Options::webhooks`.
    pub webhook_urls: Vec<String>,
    /// connector-executor's `[database]` URL (virtual MCP sessions, webhook events).
    pub executor_database_url: String,
    pub vault_url: String,
    pub audit_url: String,
    /// An agent's key: tenant `acme`, every connection and tool.
    pub agent: ApiKey,
    /// A key bound to tenant `globex` only.
    pub other_tenant_agent: ApiKey,
    /// An agent of tenant `acme` that may use only the tools in [`READ_ONLY_TOOLS`], through
    /// ExecuteTool and ProxyRequest.
    pub read_only_agent: ApiKey,
    /// An agent of tenant `acme` bound to the connections `asana-pat` and `asana-pats` (which
    /// does not exist).
    pub narrow_agent: ApiKey,
    /// An operator of tenants `acme` and `globex` with the role `sessions` (list and revoke
    /// virtual MCP sessions).
    pub sessions_operator: ApiKey,
    /// audit-log's operator key.
    pub operator: ApiKey,
    /// connector-executor's key for token-vault.
    executor_key: ApiKey,
    /// The sandbox's control key (`X-Sandbox-Control-Key`).
    control_key: String,
    /// schema-watcher's address, when `Options::watcher`.
    pub watcher_url: Option<String>,
    /// schema-watcher's keys: its own for connector-executor and audit-log, and
    /// connector-executor's for it.
    watcher_key: ApiKey,
    executor_watcher_key: ApiKey,
    watcher_db: SqliteDatabase,
    shutdown: CancellationToken,
    _files: Vec<tempfile::NamedTempFile>,
    _dirs: Vec<tempfile::TempDir>,
    _dbs: Vec<SqliteDatabase>,
    _postgres: Option<PostgresDatabase>,
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn caller(name: &str, key: &ApiKey, tenants: &[&str], role: &str) -> CallerConfig {
    CallerConfig {
        name: name.into(),
        key_sha256: key.hash(),
        previous_key_sha256: None,
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        connections: vec!["*".into()],
        tools: vec!["*".into()],
        roles: vec![role.to_owned()],
        rpcs: Vec::new(),
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    (listener, format!("http://{address}"))
}

async fn serving(url: &str) {
    let address = url
        .trim_start_matches("http://")
        .parse()
        .expect("socket address");
    agentauth_testkit::wait_serving(address, "", Duration::from_secs(30))
        .await
        .expect("serving");
}

impl System {
    /// Every sandbox request to a path starting with `path_prefix` takes `latency_ms` longer, so
    /// that calls overlap (or an answer's time is known).
    pub fn slow_down(&self, path_prefix: &str, latency_ms: u64) {
        self.sandbox
            .0
            .faults
            .lock()
            .expect("faults")
            .push(asana_sandbox::Fault {
                path_prefix: path_prefix.into(),
                latency_ms,
                status: None,
                times: None,
            });
    }

    pub async fn start(options: Options) -> Self {
        let shutdown = CancellationToken::new();
        let mut files = Vec::new();
        let mut dirs = Vec::new();

        let (sandbox_listener, sandbox_url) = match &options.sandbox_listener {
            Some(bound) => {
                let std_listener = bound.try_clone().expect("sandbox socket");
                std_listener.set_nonblocking(true).expect("non-blocking");
                let address = std_listener.local_addr().expect("address");
                (
                    TcpListener::from_std(std_listener).expect("sandbox listener"),
                    format!("http://{address}"),
                )
            }
            None => listener().await,
        };
        let control_key = ApiKey::generate().expose().to_owned();
        let sandbox = Sandbox::new(asana_sandbox::Config {
            public_url: sandbox_url.clone(),
            control_key: Some(control_key.clone()),
            auto_approve: true,
            token_lifetime: options.token_lifetime,
            limits: options.sandbox_limits.clone(),
            mcp_page_size: options.sandbox_mcp_page_size,
            webhook_failure_window: options.sandbox_webhook_failure_window,
            ..asana_sandbox::Config::default()
        });
        tokio::spawn(sandbox.clone().serve(sandbox_listener, shutdown.clone()));

        let (agent, other_tenant_agent, operator) =
            (ApiKey::generate(), ApiKey::generate(), ApiKey::generate());
        let read_only_agent = ApiKey::generate();
        let narrow_agent = ApiKey::generate();
        let sessions_operator = ApiKey::generate();
        let (executor_key, vault_key) = (ApiKey::generate(), ApiKey::generate());
        let (watcher_key, executor_watcher_key) = (ApiKey::generate(), ApiKey::generate());
        let key_file = |key: &ApiKey| {
            let mut file = tempfile::NamedTempFile::new().expect("key file");
            file.write_all(key.expose().as_bytes()).expect("write key");
            file
        };

        // audit-log on SQLite.
        let audit_db = SqliteDatabase::create().expect("sqlite");
        let (audit_listener, audit_url) = listener().await;
        let audit_config = audit_log::Config {
            server: ServerConfig {
                callers: vec![
                    caller("connector-executor", &executor_key, &["*"], "writer"),
                    caller("token-vault", &vault_key, &["*"], "writer"),
                    caller("schema-watcher", &watcher_key, &["*"], "writer"),
                    caller("operator", &operator, &["*"], "operator"),
                ],
                ..ServerConfig::default()
            },
            database: audit_log::DatabaseConfig::new(audit_db.url()),
            ..Default::default()
        };
        let audit = audit_log::AuditLogService::new(audit_config).expect("audit-log config");
        tokio::spawn(audit.run(audit_listener, shutdown.clone()));

        // token-vault with OAuth apps registered at the sandbox.
        let (callback_listener, callback_url) = listener().await;
        let redirect = format!("{callback_url}/oauth/callback");
        let rest_secret = format!("rest-{}", ApiKey::generate().expose());
        let mcp_secret = format!("mcp-{}", ApiKey::generate().expose());
        for (client_id, secret, kind) in [
            ("test-rest-app", &rest_secret, AppKind::Rest),
            ("test-mcp-app", &mcp_secret, AppKind::Mcp),
        ] {
            sandbox.tokens().register_app(App {
                client_id: client_id.to_owned(),
                client_secret: secret.clone(),
                name: client_id.to_owned(),
                kind,
                redirect_uris: vec![redirect.clone()],
            });
        }
        let prefix = openbao::fresh_prefix();
        let vault = openbao::shared();
        for (app, secret) in [("asana", &rest_secret), ("asana-mcp", &mcp_secret)] {
            write_client_secret(&prefix, app, secret).await;
        }
        let vault_db = SqliteDatabase::create().expect("sqlite");
        let api = format!("{sandbox_url}/api/1.0");
        let mcp_url = format!("{sandbox_url}/v2/mcp");
        let rest_app = OAuthApp {
            asana: &sandbox_url,
            client_id: "test-rest-app",
            client_secret: &format!("vault:secret/data/{prefix}/apps/asana#client_secret"),
            redirect_url: &redirect,
            revocable: true,
        };
        let mcp_secret_ref = format!("vault:secret/data/{prefix}/apps/asana-mcp#client_secret");
        let mcp_app = OAuthApp {
            client_id: "test-mcp-app",
            client_secret: &mcp_secret_ref,
            ..rest_app
        };
        let pat_api = options.rest_api_base_url.clone().unwrap_or(api.clone());
        let mut connections = rest_app.rest("asana", &api)
            + &connections::pat("asana-pat", &pat_api)
            + &mcp_app.mcp("asana-mcp", &mcp_url, None);
        if let Some(peer) = &options.peer_mcp_url {
            let peer_app = OAuthApp {
                revocable: false,
                ..mcp_app
            };
            connections += &peer_app.mcp("peer-mcp", peer, Some(&mcp_url));
        }
        let audit_spool = tempfile::tempdir().expect("spool");
        let vault_key_file = key_file(&vault_key);
        let vault_toml = format!(
            r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{executor_hash}"
tenants = ["*"]
roles = ["executor"]

[[server.callers]]
name = "agent"
key_sha256 = "{agent_hash}"
tenants = ["{TENANT}"]
roles = ["operator"]

[[server.callers]]
name = "globex-agent"
key_sha256 = "{other_hash}"
tenants = ["{OTHER_TENANT}"]
roles = ["operator"]

[vault]
addr = "{vault_addr}"
path_prefix = "{prefix}"

[database]
url = "{vault_db}"

[audit]
url = "{audit_url}"
api_key_file = "{vault_key_path}"
spool_dir = "{spool}"
flush_interval = "20ms"
{connections}"#,
            executor_hash = executor_key.hash(),
            agent_hash = agent.hash(),
            other_hash = other_tenant_agent.hash(),
            vault_addr = vault.addr(),
            vault_db = vault_db.url(),
            vault_key_path = vault_key_file.path().display(),
            spool = audit_spool.path().display(),
        );
        let vault_config: token_vault::Config = figment::Figment::from(Toml::string(&vault_toml))
            .extract()
            .expect("token-vault config");
        let token_vault =
            token_vault::TokenVaultService::with_vault_token(vault_config, vault.token())
                .expect("token-vault")
                .with_callback_listener(callback_listener);
        let (vault_listener, vault_url) = listener().await;
        tokio::spawn(token_vault.run(vault_listener, shutdown.clone()));

        // connector-executor, each replica with its own audit spool.
        let executor_key_file = key_file(&executor_key);
        let executor_watcher_key_file = key_file(&executor_watcher_key);
        let watcher_url = if options.watcher {
            let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            Some(format!("http://{}", free.local_addr().expect("address")))
        } else {
            None
        };
        let watcher_section = watcher_url.as_ref().map_or(String::new(), |url| {
            format!(
                "[schema_watcher]\nurl = \"{url}\"\napi_key_file = \"{}\"\n",
                executor_watcher_key_file.path().display()
            )
        });
        let mut executor_urls = Vec::new();
        let mut virtual_mcp_urls = Vec::new();
        let mut webhook_urls = Vec::new();
        let mut sessions_postgres = None;
        let sessions_sqlite = SqliteDatabase::create().expect("sqlite");
        let sessions_url = if options.database_postgres {
            let database = PostgresDatabase::create().await.expect("postgres");
            let url = database.url().to_owned();
            sessions_postgres = Some(database);
            url
        } else {
            sessions_sqlite.url().to_owned()
        };
        let webhook_listens: Vec<_> = (0..options.executor_replicas.max(1))
            .map(|_| agentauth_testkit::free_port())
            .collect();
        for replica in 0..options.executor_replicas.max(1) {
            let replica_toml = options
                .virtual_mcp_toml
                .get(replica)
                .or(options.virtual_mcp_toml.last());
            let mut virtual_mcp_section = replica_toml.map_or(String::new(), |toml| {
                let listen = agentauth_testkit::free_port();
                virtual_mcp_urls.push(format!("http://{listen}"));
                format!("[virtual_mcp]\nlisten = \"{listen}\"\n{toml}\n")
            });
            if options.webhooks {
                // Each replica names the next one's intake as its public URL, so a handshake
                // and the deliveries of a webhook land on another replica than its creator's.
                let listen = &webhook_listens[replica];
                let public = &webhook_listens[(replica + 1) % webhook_listens.len()];
                webhook_urls.push(format!("http://{listen}"));
                virtual_mcp_section.push_str(&format!(
                    "[webhooks]\nlisten = \"{listen}\"\npublic_url = \"http://{public}\"\npoll_interval = \"200ms\"\n{}\n",
                    options.webhooks_toml
                ));
            }
            if !virtual_mcp_section.is_empty() {
                virtual_mcp_section =
                    format!("[database]\nurl = \"{sessions_url}\"\n\n{virtual_mcp_section}");
            }
            let executor_spool = tempfile::tempdir().expect("spool");
            let audit_section = if options.audit {
                format!(
                    "[audit]\nurl = \"{audit_url}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\nflush_interval = \"{}ms\"\ndurability = \"{}\"\n",
                    executor_key_file.path().display(),
                    executor_spool.path().display(),
                    options.audit_flush_interval.as_millis(),
                    options.audit_durability,
                )
            } else {
                String::new()
            };
            let executor_toml = format!(
                r#"[server]
readiness_interval = "100ms"

[[server.callers]]
name = "agent"
key_sha256 = "{agent_hash}"
tenants = ["{TENANT}"]
roles = ["executor", "proxy", "events", "webhooks"]

[[server.callers]]
name = "globex-agent"
key_sha256 = "{other_hash}"
tenants = ["{OTHER_TENANT}"]
roles = ["executor", "proxy", "events", "webhooks"]

[[server.callers]]
name = "narrow-agent"
key_sha256 = "{narrow_hash}"
tenants = ["{TENANT}"]
connections = ["asana-pat", "asana-pats"]
roles = ["executor", "events", "webhooks"]

[[server.callers]]
name = "read-only-agent"
key_sha256 = "{read_only_hash}"
tenants = ["{TENANT}"]
tools = {read_only_tools:?}
roles = ["executor", "proxy"]

[[server.callers]]
name = "sessions-operator"
key_sha256 = "{sessions_hash}"
tenants = ["{TENANT}", "{OTHER_TENANT}"]
roles = ["sessions"]

[[server.callers]]
name = "schema-watcher"
key_sha256 = "{watcher_hash}"
tenants = ["{TENANT}"]
roles = ["watcher"]

[token_vault]
url = "{vault_url}"
api_key_file = "{executor_key_path}"

{audit_section}
{watcher_section}
{virtual_mcp_section}
{extra}"#,
                watcher_hash = watcher_key.hash(),
                agent_hash = agent.hash(),
                other_hash = other_tenant_agent.hash(),
                read_only_hash = read_only_agent.hash(),
                narrow_hash = narrow_agent.hash(),
                sessions_hash = sessions_operator.hash(),
                read_only_tools = READ_ONLY_TOOLS,
                executor_key_path = executor_key_file.path().display(),
                extra = options.executor_toml,
            );
            let executor_config: connector_executor::Config =
                figment::Figment::from(Toml::string(&executor_toml))
                    .extract()
                    .expect("connector-executor config");
            let executor = connector_executor::ConnectorExecutorService::new(executor_config)
                .expect("executor");
            let (executor_listener, executor_url) = listener().await;
            tokio::spawn(executor.run(executor_listener, shutdown.clone()));
            executor_urls.push(executor_url);
            dirs.push(executor_spool);
        }
        let executor_url = executor_urls[0].clone();

        for url in [&audit_url, &vault_url].into_iter().chain(&executor_urls) {
            serving(url).await;
        }
        files.extend([vault_key_file, executor_key_file, executor_watcher_key_file]);
        dirs.push(audit_spool);
        Self {
            sandbox,
            sandbox_url,
            executor_url,
            executor_urls,
            virtual_mcp_urls,
            webhook_urls,
            executor_database_url: sessions_url,
            vault_url,
            audit_url,
            agent,
            other_tenant_agent,
            read_only_agent,
            narrow_agent,
            sessions_operator,
            operator,
            executor_key,
            control_key,
            watcher_url,
            watcher_key,
            executor_watcher_key,
            watcher_db: SqliteDatabase::create().expect("sqlite"),
            shutdown,
            _files: files,
            _dirs: dirs,
            _dbs: vec![audit_db, vault_db, sessions_sqlite],
            _postgres: sessions_postgres,
        }
    }

    pub fn executor(&self) -> ConnectorExecutorClient<AuthenticatedChannel> {
        self.executor_as(&self.agent)
    }

    pub fn executor_as(&self, key: &ApiKey) -> ConnectorExecutorClient<AuthenticatedChannel> {
        ConnectorExecutorClient::new(channel(&self.executor_url, Some(key)).expect("channel"))
    }

    /// The agent's client of the `replica`th connector-executor.
    pub fn executor_replica(
        &self,
        replica: usize,
    ) -> ConnectorExecutorClient<AuthenticatedChannel> {
        ConnectorExecutorClient::new(
            channel(&self.executor_urls[replica], Some(&self.agent)).expect("channel"),
        )
    }

    pub fn vault(&self) -> TokenVaultClient<AuthenticatedChannel> {
        TokenVaultClient::new(channel(&self.vault_url, Some(&self.agent)).expect("channel"))
    }

    /// Stores `pat` for `identifier` on `asana-pat` (tenant `acme`).
    pub async fn connect_pat(&self, identifier: &str, pat: &str) {
        self.connect_pat_in(TENANT, identifier, pat).await;
    }

    /// Stores `pat` for `identifier` on `asana-pat` in `tenant` (`acme` or `globex`), as
    /// that tenant's agent.
    pub async fn connect_pat_in(&self, tenant: &str, identifier: &str, pat: &str) {
        self.put_pat(tenant, identifier, pat, false).await;
    }

    /// Stores `pat` for `identifier` (tenant `acme`) in place of a PAT of another Asana user.
    pub async fn replace_pat(&self, identifier: &str, pat: &str) {
        self.put_pat(TENANT, identifier, pat, true).await;
    }

    async fn put_pat(&self, tenant: &str, identifier: &str, pat: &str, replace_user: bool) {
        let key = if tenant == OTHER_TENANT {
            &self.other_tenant_agent
        } else {
            &self.agent
        };
        TokenVaultClient::new(channel(&self.vault_url, Some(key)).expect("channel"))
            .put_credential(vault_pb::PutCredentialRequest {
                tenant: tenant.into(),
                connection_name: "asana-pat".into(),
                identifier: identifier.into(),
                token: pat.into(),
                replace_user,
            })
            .await
            .expect("PAT stored");
    }

    /// Connects `identifier` (tenant `acme`) on an OAuth `connection` through the consent flow;
    /// the sandbox approves at once.
    pub async fn connect_oauth(&self, connection: &str, identifier: &str) {
        let link = self
            .vault()
            .create_authorization_link(vault_pb::CreateAuthorizationLinkRequest {
                tenant: TENANT.into(),
                connection_name: connection.into(),
                identifier: identifier.into(),
                return_url: None,
                replace_user: false,
            })
            .await
            .expect("link")
            .into_inner()
            .authorization_url;
        follow_consent(&link).await;
    }

    /// ExecuteTool as the agent, tenant `acme`.
    pub async fn execute(
        &self,
        connection: &str,
        identifier: &str,
        tool: &str,
        input: serde_json::Value,
    ) -> Result<pb::ExecuteToolResponse, tonic::Status> {
        self.execute_on(0, connection, identifier, tool, input)
            .await
    }

    /// ExecuteTool as the agent, tenant `acme`, on the `replica`th connector-executor.
    pub async fn execute_on(
        &self,
        replica: usize,
        connection: &str,
        identifier: &str,
        tool: &str,
        input: serde_json::Value,
    ) -> Result<pb::ExecuteToolResponse, tonic::Status> {
        self.executor_replica(replica)
            .execute_tool(pb::ExecuteToolRequest {
                tenant: TENANT.into(),
                connection_name: connection.into(),
                identifier: identifier.into(),
                tool_name: tool.into(),
                input_json: input.to_string(),
                options: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Every audit event of `tenant`, oldest first.
    pub async fn audit_events(&self, tenant: &str) -> Vec<audit_pb::Event> {
        let mut client =
            AuditLogClient::new(channel(&self.audit_url, Some(&self.operator)).expect("channel"));
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .query(audit_pb::QueryRequest {
                    filter: Some(audit_pb::EventFilter {
                        tenant: tenant.into(),
                        ..audit_pb::EventFilter::default()
                    }),
                    page_size: 1000,
                    page_token,
                })
                .await
                .expect("query")
                .into_inner();
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return events;
            }
            page_token = page.next_page_token;
        }
    }

    /// The access token connector-executor gets for an account of tenant `acme` (as
    /// connector-executor), e.g. to prove it never leaks.
    pub async fn access_token(&self, connection: &str, identifier: &str) -> String {
        TokenVaultClient::new(channel(&self.vault_url, Some(&self.executor_key)).expect("channel"))
            .get_access_token(vault_pb::GetAccessTokenRequest {
                tenant: TENANT.into(),
                connection_name: connection.into(),
                identifier: identifier.into(),
                min_valid_for: None,
            })
            .await
            .expect("access token")
            .into_inner()
            .access_token
    }

    /// How many requests the sandbox's REST API has admitted, over every token.
    pub fn sandbox_requests(&self) -> u64 {
        self.sandbox_stats()["tokens"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, counters)| counters["requests_total"].as_u64())
            .sum()
    }

    /// The sandbox's counters (`/_sandbox/stats`).
    pub fn sandbox_stats(&self) -> serde_json::Value {
        self.sandbox.0.limits.stats()
    }

    /// The sandbox's limit counters of one token (a PAT or an access token).
    pub fn token_stats(&self, token: &str) -> serde_json::Value {
        self.sandbox_stats()["tokens"][asana_sandbox::tokens::token_key(token)].clone()
    }

    /// Refreshes the sandbox served for the OAuth app `client_id`.
    pub fn refreshes(&self, client_id: &str) -> u64 {
        self.sandbox_stats()["tokens"][asana_sandbox::tokens::token_key(client_id)]["refreshes"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The gid of the seeded user with `email`.
    pub fn user_gid(&self, email: &str) -> String {
        self.sandbox
            .world()
            .all("user", |u| u["email"] == email)
            .next()
            .and_then(|u| u["gid"].as_str())
            .expect("seeded user")
            .to_owned()
    }

    /// Calls the sandbox's control API (`/_sandbox/…`) and returns its JSON answer; panics
    /// unless it succeeds.
    pub async fn sandbox_control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let response = reqwest::Client::new()
            .request(method, format!("{}/_sandbox/{path}", self.sandbox_url))
            .header(asana_sandbox::control::HEADER, &self.control_key)
            .json(&body)
            .send()
            .await
            .expect("sandbox answers");
        let status = response.status();
        let body = response.bytes().await.expect("body");
        let answer: serde_json::Value = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).expect("JSON")
        };
        assert!(status.is_success(), "/_sandbox/{path}: {status} {answer}");
        answer
    }
}

/// One watch of an MCP connection as the account `probe` (tenant `acme`).
#[derive(Debug, Clone)]
pub struct Watch {
    pub connection: &'static str,
    pub mode: &'static str,
    pub interval: Duration,
    pub auto_approve_first: bool,
    pub failures_before_alert: u32,
}

impl Default for Watch {
    fn default() -> Self {
        Self {
            connection: "asana-mcp",
            mode: "pinned",
            interval: Duration::from_millis(300),
            auto_approve_first: false,
            failures_before_alert: 3,
        }
    }
}

/// A running schema-watcher; dropping it (or [`Watcher::stop`]) stops it.
pub struct Watcher {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _key_file: tempfile::NamedTempFile,
    _spool: tempfile::TempDir,
}

impl Watcher {
    /// Stops the watcher and waits until its port is free.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("watcher task").expect("watcher ran");
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl System {
    /// Starts schema-watcher (`Options::watcher`) with one watch, on its
    /// database, which a restart keeps; waits until it serves.
    pub async fn start_watcher(&self, watch: Watch) -> Watcher {
        let url = self.watcher_url.as_ref().expect("Options::watcher");
        let mut key_file = tempfile::NamedTempFile::new().expect("key file");
        key_file
            .write_all(self.watcher_key.expose().as_bytes())
            .expect("write key");
        let spool = tempfile::tempdir().expect("spool");
        let toml = format!(
            r#"[server]
readiness_interval = "100ms"
listen = "{listen}"

[[server.callers]]
name = "connector-executor"
key_sha256 = "{executor_hash}"
tenants = ["*"]
roles = ["executor"]

[[server.callers]]
name = "operator"
key_sha256 = "{operator_hash}"
tenants = ["*"]
roles = ["operator"]

[[server.callers]]
name = "agent"
key_sha256 = "{agent_hash}"
tenants = ["*"]
roles = ["reader"]

[[server.callers]]
name = "globex-agent"
key_sha256 = "{other_hash}"
tenants = ["{OTHER_TENANT}"]
roles = ["reader"]

[database]
url = "{database}"

[executor]
url = "{executor}"
api_key_file = "{key}"

[audit]
url = "{audit}"
api_key_file = "{key}"
spool_dir = "{spool}"
flush_interval = "20ms"

[polling]
failures_before_alert = {failures}
min_gap = "50ms"

[[watches]]
connection = "{connection}"
tenant = "{TENANT}"
identifier = "probe"
interval = "{interval}ms"
jitter = "0s"
mode = "{mode}"
auto_approve_first = {auto}
"#,
            listen = url.trim_start_matches("http://"),
            executor_hash = self.executor_watcher_key.hash(),
            operator_hash = self.operator.hash(),
            agent_hash = self.agent.hash(),
            other_hash = self.other_tenant_agent.hash(),
            database = self.watcher_db.url(),
            executor = self.executor_url,
            key = key_file.path().display(),
            audit = self.audit_url,
            spool = spool.path().display(),
            failures = watch.failures_before_alert,
            interval = watch.interval.as_millis(),
            mode = watch.mode,
            connection = watch.connection,
            auto = watch.auto_approve_first,
        );
        let config: schema_watcher::Config = figment::Figment::from(Toml::string(&toml))
            .extract()
            .expect("schema-watcher config");
        let service = schema_watcher::SchemaWatcherService::new(config).expect("schema-watcher");
        let listener = TcpListener::bind(url.trim_start_matches("http://"))
            .await
            .expect("the watcher's address is free");
        let shutdown = self.shutdown.child_token();
        let mut task = tokio::spawn(service.run(listener, shutdown.clone()));
        tokio::select! {
            () = serving(url) => {}
            ended = &mut task => panic!("schema-watcher stopped at start: {ended:?}"),
        }
        Watcher {
            shutdown,
            task: Some(task),
            _key_file: key_file,
            _spool: spool,
        }
    }

    /// schema-watcher's client as the operator.
    pub fn watcher(&self) -> SchemaWatcherClient<AuthenticatedChannel> {
        self.watcher_as(&self.operator)
    }

    /// schema-watcher's client with `key` (e.g. `other_tenant_agent`, a reader of `globex`).
    pub fn watcher_as(&self, key: &ApiKey) -> SchemaWatcherClient<AuthenticatedChannel> {
        let url = self.watcher_url.as_ref().expect("Options::watcher");
        SchemaWatcherClient::new(channel(url, Some(key)).expect("channel"))
    }
}

/// Opens an authorization link like a browser that approves at once, through the callback.
pub async fn follow_consent(link: &str) {
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

/// Writes an app's client secret where token-vault's `client_secret` reference points.
async fn write_client_secret(prefix: &str, app: &str, secret: &str) {
    openbao::shared()
        .write_kv(
            &format!("{prefix}/apps/{app}"),
            serde_json::json!({ "client_secret": secret }),
        )
        .await
        .expect("client secret written");
}
