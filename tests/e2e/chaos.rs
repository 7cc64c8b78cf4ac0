//! Several replicas of every service, and one of each kind SIGKILLed mid-run.
//!
//! Three connector-executor, two token-vault, two audit-log and one schema-watcher process share
//! one OpenBao, one PostgreSQL (a database per service kind) and one Redis (connector-executor's
//! `[limits.shared]`); each kind is reached through a balancer, as through a Kubernetes Service.
//! Concurrent callers spread their calls over the executors against the sandbox: many writes on
//! one PAT, reads on OAuth accounts whose tokens the sandbox expires again and again. Midway one
//! replica of each kind is killed while the callers go on against the survivors (a caller
//! whose call a killed replica leaves unanswered goes on with the next); the killed
//! connector-executor and token-vault come back on their spools, schema-watcher on its
//! database. What users rely on holds for every call that was answered, before the kill and
//! after it:
//!
//! - one refresh per expiry (the sandbox's count per OAuth app, one app per account), each
//!   refresh audited, although several executors and token-vaults saw the token rejected;
//! - Asana's per-token limits: the sandbox never had more than 15 writes or 50 reads in flight,
//!   nor refused a request, under writes that three per-replica limiters would overrun;
//! - each tenant's audit chain verifies without a gap and holds the `tool.executed` event of
//!   every answered call (success or Asana error), those of the killed executor too: it
//!   held its events back, so when it died they were only in its journal (`durability =
//!   "sync"`), which its restart delivers;
//! - schema-watcher polls again after its restart, and the restart invents no drift.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_proto::audit::v1 as audit;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_proto::executor::v1 as executor;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use agentauth_proto::vault::v1 as vault;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_proto::watcher::v1 as watcher;
use agentauth_proto::watcher::v1::schema_watcher_client::SchemaWatcherClient;
use agentauth_testkit::connections::{self, OAuthApp};
use agentauth_testkit::database::PostgresDatabase;
use agentauth_testkit::process::{ServiceProcess, binary};
use agentauth_testkit::relay::Balancer;
use agentauth_testkit::{assert_eventually, free_port, openbao, redis, wait_serving};
use asana_sandbox::seed::ALICE_PAT;
use asana_sandbox::tokens::token_key;
use serde_json::{Value, json};
use tonic::Code;

const ACME: &str = "acme";
const GLOBEX: &str = "globex";

/// An OAuth account whose token expires during the run, on a connection (and OAuth app) of
/// its own: the sandbox counts refreshes per app, so the app's count is the account's.
#[derive(Debug, Clone, Copy)]
struct Expiring {
    tenant: &'static str,
    connection: &'static str,
    identifier: &'static str,
    app: &'static str,
}

const EXPIRING: [Expiring; 2] = [
    Expiring {
        tenant: ACME,
        connection: "asana-a",
        identifier: "reader-a",
        app: "chaos-app-a",
    },
    Expiring {
        tenant: GLOBEX,
        connection: "asana-b",
        identifier: "reader-b",
        app: "chaos-app-b",
    },
];
/// schema-watcher's probe account (tenant `globex`) on the MCP connection.
const PROBE: &str = "drift-probe";
const MCP_APP: &str = "chaos-app-mcp";

/// The connector-executor replica that is killed (and token-vault and audit-log replica 0).
const KILLED: usize = 1;

/// Concurrent writers on alice's PAT: twice the 15 writes Asana lets one token have in
/// flight, so that three executors each keeping its own count would send them all at once.
const WRITERS: usize = 30;
/// How long the sandbox takes over each write, so that writes overlap.
const WRITE_LATENCY_MS: u64 = 1000;
/// Concurrent readers per expiring account: two per executor, so that every executor sees an
/// expired token rejected, and reports it to the token-vault its connection reaches.
const READERS: usize = 6;
/// How long the sandbox takes over each read of a user, which keeps each account's readers
/// (12 a second) and the writers (15) within the minute budget of alice's paid domain.
const READ_LATENCY_MS: u64 = 500;
/// The deadline of one call: its wait for a rate slot included.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadlines of what the test waits for (a refresh, a delivery, a start).
const WITHIN: Duration = Duration::from_secs(30);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The sandbox process and its control API.
struct Sandbox {
    url: String,
    control_key: ApiKey,
    http: reqwest::Client,
    _process: tokio::process::Child,
}

impl Sandbox {
    async fn start() -> Self {
        let address = free_port();
        let control_key = ApiKey::generate();
        let process = tokio::process::Command::new(binary("asana-sandbox"))
            .args(["--listen", &address.to_string(), "--auto-approve"])
            .env("ASANA_SANDBOX_CONTROL_KEY", control_key.expose())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("asana-sandbox");
        let sandbox = Self {
            url: format!("http://{address}"),
            control_key,
            http: reqwest::Client::new(),
            _process: process,
        };
        let up = agentauth_testkit::eventually(WITHIN, || async {
            sandbox
                .http
                .get(format!("{}/_sandbox/stats", sandbox.url))
                .header(asana_sandbox::control::HEADER, sandbox.control_key.expose())
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        assert!(up.is_some(), "the sandbox answers at {}", sandbox.url);
        sandbox
    }

    /// A control call (`/_sandbox/…`) that must succeed; its JSON answer.
    async fn control(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method, format!("{}/_sandbox/{path}", self.url))
            .header(asana_sandbox::control::HEADER, self.control_key.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the sandbox answers");
        let status = response.status();
        let answer: Value = response.json().await.expect("JSON");
        assert!(status.is_success(), "/_sandbox/{path}: {status} {answer}");
        answer
    }

    async fn stats(&self) -> Value {
        self.control(reqwest::Method::GET, "stats", None).await
    }

    /// Every request to `path_prefix` takes `latency_ms` longer.
    async fn slow_down(&self, path_prefix: &str, latency_ms: u64) {
        self.control(
            reqwest::Method::POST,
            "faults",
            Some(json!({"path_prefix": path_prefix, "latency_ms": latency_ms})),
        )
        .await;
    }
}

/// Asserts that the sandbox never saw a token above Asana's limits (it counts what it refuses,
/// so a request over a limit shows as `rate_limited`), and that the writes kept all fifteen
/// write slots of alice's PAT busy (so three executors each with its own limiter would have
/// overrun them).
fn within_limits(stats: &Value) {
    for (token, counters) in stats["tokens"].as_object().expect("tokens") {
        let counter = |name: &str| counters[name].as_u64().unwrap_or_default();
        assert_eq!(counter("rate_limited"), 0, "{token}: {counters}");
        assert!(
            counter("peak_in_flight_writes") <= 15,
            "{token}: {counters}"
        );
        assert!(counter("peak_in_flight_reads") <= 50, "{token}: {counters}");
        assert!(
            counter("requests_last_minute") <= 1500,
            "{token}: {counters}"
        );
    }
    let pat = &stats["tokens"][token_key(ALICE_PAT)];
    assert_eq!(
        pat["peak_in_flight_writes"], 15,
        "the writers kept all fifteen write slots busy: {pat}"
    );
}

/// Refreshes the sandbox served for the OAuth app `app`.
fn refreshes(stats: &Value, app: &str) -> u64 {
    stats["refreshes_by_client"][app].as_u64().unwrap_or(0)
}

/// The keys every caller of this system presents, and where the services read theirs.
struct Keys {
    /// An internal service: connects users (token-vault `onboarding`), runs tools
    /// (connector-executor `executor`), in both tenants.
    agent: ApiKey,
    /// Compliance: audit-log's and schema-watcher's `reader`.
    compliance: ApiKey,
    executor_to_vault: ApiKey,
    watcher_to_executor: ApiKey,
    /// Each service's key at audit-log, where it writes in its own name.
    vault_to_audit: ApiKey,
    executor_to_audit: ApiKey,
    watcher_to_audit: ApiKey,
}

impl Keys {
    fn new() -> Self {
        Self {
            agent: ApiKey::generate(),
            compliance: ApiKey::generate(),
            executor_to_vault: ApiKey::generate(),
            watcher_to_executor: ApiKey::generate(),
            vault_to_audit: ApiKey::generate(),
            executor_to_audit: ApiKey::generate(),
            watcher_to_audit: ApiKey::generate(),
        }
    }
}

fn caller_entry(name: &str, key: &ApiKey, tenants: &str, roles: &str) -> String {
    format!(
        "\n[[server.callers]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\ntenants = {tenants}\nroles = {roles}\n",
        key.hash()
    )
}

/// Where the file holding `key` is, in `dir`.
fn key_path(dir: &Path, key: &ApiKey) -> PathBuf {
    dir.join(format!("{}.key", key.hash()))
}

/// The whole system's fixed parts: addresses (a restarted replica comes back on its own),
/// databases, key files, spools and configurations.
struct Topology {
    dir: PathBuf,
    keys: Keys,
    sandbox_url: String,
    audit_at: [SocketAddr; 2],
    vault_at: [SocketAddr; 2],
    callback_at: [SocketAddr; 2],
    executor_at: [SocketAddr; 3],
    watcher_at: SocketAddr,
    audit: Balancer,
    vault: Balancer,
    callback: Balancer,
    executor: Balancer,
    vault_prefix: String,
    redis_prefix: String,
    audit_db: PostgresDatabase,
    vault_db: PostgresDatabase,
    watcher_db: PostgresDatabase,
}

impl Topology {
    async fn new(dir: &Path, sandbox: &Sandbox) -> Self {
        let audit_at = [free_port(), free_port()];
        let vault_at = [free_port(), free_port()];
        let callback_at = [free_port(), free_port()];
        let executor_at = [free_port(), free_port(), free_port()];
        let (audit_db, vault_db, watcher_db) = (
            PostgresDatabase::create().await.expect("PostgreSQL"),
            PostgresDatabase::create().await.expect("PostgreSQL"),
            PostgresDatabase::create().await.expect("PostgreSQL"),
        );
        // Each service's key files, written once: a service reads them at every start.
        let keys = Keys::new();
        for key in [
            &keys.executor_to_vault,
            &keys.watcher_to_executor,
            &keys.vault_to_audit,
            &keys.executor_to_audit,
            &keys.watcher_to_audit,
        ] {
            std::fs::write(key_path(dir, key), key.expose()).expect("key file");
        }
        Self {
            dir: dir.to_owned(),
            keys,
            sandbox_url: sandbox.url.clone(),
            audit: Balancer::start(audit_at.to_vec()).await.expect("balancer"),
            vault: Balancer::start(vault_at.to_vec()).await.expect("balancer"),
            callback: Balancer::start(callback_at.to_vec())
                .await
                .expect("balancer"),
            executor: Balancer::start(executor_at.to_vec())
                .await
                .expect("balancer"),
            audit_at,
            vault_at,
            callback_at,
            executor_at,
            watcher_at: free_port(),
            vault_prefix: openbao::fresh_prefix(),
            redis_prefix: redis::fresh_prefix(),
            audit_db,
            vault_db,
            watcher_db,
        }
    }

    /// The file holding `key`, for the service that presents it.
    fn key_file(&self, key: &ApiKey) -> String {
        key_path(&self.dir, key).display().to_string()
    }

    /// `[audit]` of a service: through the balancer, journaled before a call is answered,
    /// spooled in a folder that outlives the process.
    fn audit_section(&self, key: &ApiKey, spool: &str, flush_interval: &str) -> String {
        format!(
            "\n[audit]\nurl = \"http://{}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\ndurability = \"sync\"\nflush_interval = \"{flush_interval}\"\n",
            self.audit.address(),
            self.key_file(key),
            self.dir.join(spool).display(),
        )
    }

    fn audit_config(&self) -> String {
        let mut config = "[server]\nreadiness_interval = \"100ms\"\n".to_owned();
        for (service, key) in [
            ("token-vault", &self.keys.vault_to_audit),
            ("connector-executor", &self.keys.executor_to_audit),
            ("schema-watcher", &self.keys.watcher_to_audit),
        ] {
            config += &caller_entry(service, key, r#"["*"]"#, r#"["writer"]"#);
        }
        config += &caller_entry(
            "compliance",
            &self.keys.compliance,
            r#"["acme", "globex"]"#,
            r#"["reader"]"#,
        );
        config + &format!("\n[database]\nurl = \"{}\"\n", self.audit_db.url())
    }

    fn start_audit(&self, replica: usize) -> ServiceProcess {
        ServiceProcess::start_on(
            "audit-log",
            &self.audit_config(),
            &[],
            self.audit_at[replica],
        )
        .expect("audit-log")
    }

    fn vault_config(&self, replica: usize) -> String {
        let api = format!("{}/api/1.0", self.sandbox_url);
        let redirect = format!("http://{}/oauth/callback", self.callback.address());
        let secrets: Vec<String> = [EXPIRING[0].app, EXPIRING[1].app, MCP_APP]
            .iter()
            .map(|app| {
                format!(
                    "vault:secret/data/{}/apps/{app}#client_secret",
                    self.vault_prefix
                )
            })
            .collect();
        let app = |client_id, client_secret| OAuthApp {
            asana: &self.sandbox_url,
            client_id,
            client_secret,
            redirect_url: &redirect,
            revocable: false,
        };
        let mut connections = connections::pat("asana-pat", &api);
        for (account, secret) in EXPIRING.iter().zip(&secrets) {
            connections += &app(account.app, secret.as_str()).rest(account.connection, &api);
        }
        connections += &app(MCP_APP, secrets[2].as_str()).mcp(
            "asana-mcp",
            &format!("{}/v2/mcp", self.sandbox_url),
            None,
        );
        format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}{}\n[vault]\naddr = \"{}\"\npath_prefix = \"{}\"\n\n[database]\nurl = \"{}\"\n\n[oauth]\nhttp_listen = \"{}\"\n{}{connections}",
            caller_entry(
                "connector-executor",
                &self.keys.executor_to_vault,
                r#"["*"]"#,
                r#"["executor"]"#
            ),
            caller_entry(
                "agent",
                &self.keys.agent,
                r#"["acme", "globex"]"#,
                r#"["onboarding"]"#
            ),
            openbao::shared().addr(),
            self.vault_prefix,
            self.vault_db.url(),
            self.callback_at[replica],
            self.audit_section(
                &self.keys.vault_to_audit,
                &format!("token-vault-{replica}"),
                "100ms"
            ),
        )
    }

    fn start_vault(&self, replica: usize) -> ServiceProcess {
        ServiceProcess::start_on(
            "token-vault",
            &self.vault_config(replica),
            &[("VAULT_TOKEN", openbao::shared().token())],
            self.vault_at[replica],
        )
        .expect("token-vault")
    }

    /// `flush_interval`: how long an event waits for its batch.
    fn executor_config(&self, replica: usize, flush_interval: &str) -> String {
        let mut config = format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}{}\n[token_vault]\nurl = \"http://{}\"\napi_key_file = \"{}\"\n{}",
            caller_entry(
                "agent",
                &self.keys.agent,
                r#"["acme", "globex"]"#,
                r#"["executor"]"#
            ),
            caller_entry(
                "schema-watcher",
                &self.keys.watcher_to_executor,
                r#"["globex"]"#,
                r#"["watcher"]"#
            ),
            self.vault.address(),
            self.key_file(&self.keys.executor_to_vault),
            self.audit_section(
                &self.keys.executor_to_audit,
                &format!("connector-executor-{replica}"),
                flush_interval
            ),
        );
        config += &format!(
            "\n[limits.shared]\nurl = \"{}\"\nkey_prefix = \"{}\"\nreplicas = 3\n",
            redis::shared_url(),
            self.redis_prefix
        );
        // Alice's workspace is on a paid plan: 1,500 requests a minute per token.
        for connection in ["asana-pat", EXPIRING[0].connection, EXPIRING[1].connection] {
            config += &format!("\n[connections.{connection}]\nrequests_per_minute = 1500\n");
        }
        config
    }

    fn start_executor(&self, replica: usize, flush_interval: &str) -> ServiceProcess {
        ServiceProcess::start_on(
            "connector-executor",
            &self.executor_config(replica, flush_interval),
            &[],
            self.executor_at[replica],
        )
        .expect("connector-executor")
    }

    fn watcher_config(&self) -> String {
        format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}\n[database]\nurl = \"{}\"\n\n[executor]\nurl = \"http://{}\"\napi_key_file = \"{}\"\n{}\n[polling]\nmin_gap = \"50ms\"\n\n[[watches]]\nconnection = \"asana-mcp\"\ntenant = \"{GLOBEX}\"\nidentifier = \"{PROBE}\"\ninterval = \"500ms\"\njitter = \"0s\"\nmode = \"warn\"\nauto_approve_first = true\n",
            caller_entry(
                "compliance",
                &self.keys.compliance,
                r#"["globex"]"#,
                r#"["reader"]"#
            ),
            self.watcher_db.url(),
            self.executor.address(),
            self.key_file(&self.keys.watcher_to_executor),
            self.audit_section(&self.keys.watcher_to_audit, "schema-watcher", "100ms"),
        )
    }

    fn start_watcher(&self) -> ServiceProcess {
        ServiceProcess::start_on(
            "schema-watcher",
            &self.watcher_config(),
            &[],
            self.watcher_at,
        )
        .expect("schema-watcher")
    }

    fn vault_client(&self) -> TokenVaultClient<AuthenticatedChannel> {
        let url = format!("http://{}", self.vault.address());
        TokenVaultClient::new(channel(&url, Some(&self.keys.agent)).expect("channel"))
    }

    fn audit_client(&self) -> AuditLogClient<AuthenticatedChannel> {
        let url = format!("http://{}", self.audit.address());
        AuditLogClient::new(channel(&url, Some(&self.keys.compliance)).expect("channel"))
    }

    fn watcher_client(&self) -> SchemaWatcherClient<AuthenticatedChannel> {
        let url = format!("http://{}", self.watcher_at);
        SchemaWatcherClient::new(channel(&url, Some(&self.keys.compliance)).expect("channel"))
    }

    /// Connects an OAuth account as the sandbox's browser user (alice), approving at once; the
    /// callback lands on whichever token-vault the balancer picks.
    async fn connect_oauth(&self, tenant: &str, connection: &str, identifier: &str) {
        let link = self
            .vault_client()
            .create_authorization_link(vault::CreateAuthorizationLinkRequest {
                tenant: tenant.into(),
                connection_name: connection.into(),
                identifier: identifier.into(),
                return_url: None,
                replace_user: false,
            })
            .await
            .expect("an authorization link")
            .into_inner()
            .authorization_url;
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let consent = browser
            .get(&link)
            .send()
            .await
            .expect("the sandbox answers");
        let callback = consent
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_else(|| panic!("no redirect after consent: {consent:?}"))
            .to_owned();
        let connected = browser.get(&callback).send().await.expect("callback");
        assert!(connected.status().is_success(), "{connected:?}");
    }

    /// Every event of `tenant` (of `action`, when given).
    async fn events(&self, tenant: &str, action: Option<&str>) -> Vec<audit::Event> {
        let mut client = self.audit_client();
        let mut events = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = client
                .query(audit::QueryRequest {
                    filter: Some(audit::EventFilter {
                        tenant: tenant.into(),
                        action: action.map(str::to_owned),
                        ..Default::default()
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

    /// The ids of every `tool.executed` event in either tenant.
    async fn executed(&self) -> HashSet<String> {
        let mut ids = HashSet::new();
        for tenant in [ACME, GLOBEX] {
            ids.extend(
                self.events(tenant, Some("tool.executed"))
                    .await
                    .into_iter()
                    .map(|e| e.event_id),
            );
        }
        ids
    }

    /// schema-watcher's approved baseline of the MCP connection, once there is one.
    async fn baseline(&self) -> Option<watcher::Snapshot> {
        self.watcher_client()
            .get_snapshot(watcher::GetSnapshotRequest {
                connection_name: "asana-mcp".into(),
                selector: Some(watcher::get_snapshot_request::Selector::Alias(
                    watcher::SnapshotAlias::Baseline.into(),
                )),
            })
            .await
            .ok()?
            .into_inner()
            .snapshot
    }

    /// How many times schema-watcher's probe has listed the MCP tools.
    async fn probe_listings(&self) -> usize {
        self.events(GLOBEX, Some("tools.listed"))
            .await
            .iter()
            .filter(|e| e.subject.as_ref().is_some_and(|s| s.identifier == PROBE))
            .count()
    }
}

/// One call a caller makes over and over.
#[derive(Debug, Clone)]
struct Call {
    tenant: &'static str,
    connection: &'static str,
    identifier: &'static str,
    tool: &'static str,
    /// The input; `{n}` in it becomes the call's number.
    input: String,
}

/// A call that got an answer: a result or an Asana error, and so an audit event.
#[derive(Debug)]
struct Answered {
    execution_id: String,
    replica: usize,
}

/// What the callers saw.
#[derive(Debug, Default)]
struct Ledger {
    answered: Vec<Answered>,
    /// The newest credential version each OAuth connection succeeded with.
    newest: HashMap<&'static str, u64>,
    /// Calls left unanswered, by the replica they were made to: UNAVAILABLE from a killed replica (or a replica's killed peer), or the
    /// connection lost with a replica killed mid-call.
    unanswered: [usize; 3],
    /// Calls refused RESOURCE_EXHAUSTED, to be made again later: a killed executor's
    /// in-flight slots stay taken until their leases run out, so for a while the survivors
    /// have fewer to share and a writer may not get one within `[limits] max_wait`.
    retry_later: usize,
    /// Any other refusal, by code and message.
    unexpected: Vec<String>,
}

/// The callers' shared state: a client per executor replica, and whether to go on.
struct Callers {
    executors: Vec<ConnectorExecutorClient<AuthenticatedChannel>>,
    running: AtomicBool,
    ledger: Mutex<Ledger>,
}

impl Callers {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Answered calls so far (of `replica`, when given).
    fn answered(&self, replica: Option<usize>) -> usize {
        self.ledger()
            .answered
            .iter()
            .filter(|a| replica.is_none_or(|r| a.replica == r))
            .count()
    }

    /// The execution ids of the calls `replica` answered.
    fn answered_ids(&self, replica: usize) -> HashSet<String> {
        self.ledger()
            .answered
            .iter()
            .filter(|a| a.replica == replica)
            .map(|a| a.execution_id.clone())
            .collect()
    }

    /// What the callers saw so far, in a line.
    fn summary(&self) -> String {
        let ledger = self.ledger();
        format!(
            "{} answered, {:?} unanswered by replica, {} to retry later, {} unexpected \
             (first: {:?})",
            ledger.answered.len(),
            ledger.unanswered,
            ledger.retry_later,
            ledger.unexpected.len(),
            ledger.unexpected.first()
        )
    }

    fn newest(&self, connection: &str) -> u64 {
        self.ledger()
            .newest
            .get(connection)
            .copied()
            .unwrap_or_default()
    }
}

/// Makes `call` until told to stop, each time on the next executor replica (so a replica that
/// died costs a caller one call), after a pause when refused for lack of a rate slot.
async fn caller(callers: Arc<Callers>, call: Call, first: usize) {
    let replicas = callers.executors.len();
    let mut n = 0usize;
    while callers.running.load(Ordering::Relaxed) {
        let replica = (first + n) % replicas;
        let mut request = tonic::Request::new(executor::ExecuteToolRequest {
            tenant: call.tenant.into(),
            connection_name: call.connection.into(),
            identifier: call.identifier.into(),
            tool_name: call.tool.into(),
            input_json: call.input.replace("{n}", &n.to_string()),
            options: None,
        });
        request.set_timeout(CALL_TIMEOUT);
        n += 1;
        let result = callers.executors[replica]
            .clone()
            .execute_tool(request)
            .await;
        let refused = {
            let mut ledger = callers.ledger();
            match result {
                Ok(response) => {
                    let response = response.into_inner();
                    if !response.is_error {
                        let newest = ledger.newest.entry(call.connection).or_default();
                        *newest = (*newest).max(response.credential_version);
                    }
                    ledger.answered.push(Answered {
                        execution_id: response.execution_id,
                        replica,
                    });
                    false
                }
                Err(status) if unanswered(&status) => {
                    ledger.unanswered[replica] += 1;
                    false
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    ledger.retry_later += 1;
                    true
                }
                Err(status) => {
                    let refusal = format!("{:?}: {}", status.code(), status.message());
                    ledger.unexpected.push(refusal);
                    false
                }
            }
        };
        if refused {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Whether a call got no answer: its replica (or a peer it needed) was unavailable, or the
/// connection to it was lost mid-call (tonic's "transport error", or hyper's "operation was
/// canceled" for a call the lost connection had not sent; the callers cancel nothing).
fn unanswered(status: &tonic::Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown => status.message() == "transport error",
        Code::Cancelled => status.message() == "operation was canceled",
        _ => false,
    }
}

/// Expires every expiring account's token at the sandbox, and waits until each was refreshed
/// once more and calls succeed again with the refreshed credential (so no refresh is left
/// half done when a replica is killed next).
async fn expire_all(sandbox: &Sandbox, callers: &Callers, alice: &str, expiries: &mut u64) {
    let before: Vec<u64> = EXPIRING
        .iter()
        .map(|a| callers.newest(a.connection))
        .collect();
    for account in EXPIRING {
        sandbox
            .control(
                reqwest::Method::POST,
                "grants/expire",
                Some(json!({"user": alice, "client_id": account.app})),
            )
            .await;
    }
    *expiries += 1;
    let expected = *expiries;
    for (account, before) in EXPIRING.iter().zip(before) {
        let mut counted = 0;
        assert_eventually!(
            WITHIN,
            async {
                counted = refreshes(&sandbox.stats().await, account.app);
                counted >= expected && callers.newest(account.connection) > before
            },
            "{}: {counted} refreshes after {expected} expiries, calls back on a newer credential \
             than {before}; {}",
            account.connection,
            callers.summary()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_replica_of_each_kind_killed_every_promise_holds_for_every_answered_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start().await;
    let system = Topology::new(dir.path(), &sandbox).await;

    // The OAuth apps, registered at the sandbox, their secrets in OpenBao.
    let redirect = format!("http://{}/oauth/callback", system.callback.address());
    for (app, kind) in [
        (EXPIRING[0].app, "rest"),
        (EXPIRING[1].app, "rest"),
        (MCP_APP, "mcp"),
    ] {
        let secret = ApiKey::generate();
        sandbox
            .control(
                reqwest::Method::POST,
                "apps",
                Some(json!({
                    "client_id": app, "client_secret": secret.expose(), "name": app,
                    "kind": kind, "redirect_uris": [redirect],
                })),
            )
            .await;
        openbao::shared()
            .write_kv(
                &format!("{}/apps/{app}", system.vault_prefix),
                json!({"client_secret": secret.expose()}),
            )
            .await
            .expect("client secret");
    }

    // Every replica at once, as a rollout starts them (migrations race on each database).
    let mut audit_logs = [system.start_audit(0), system.start_audit(1)];
    let mut token_vaults = [system.start_vault(0), system.start_vault(1)];
    // The replica to be killed holds its events back, so that every call it answers is only in
    // its journal when it dies: its restart must deliver them all.
    let mut executors: [ServiceProcess; 3] = std::array::from_fn(|replica| {
        let flush_interval = if replica == KILLED { "1h" } else { "200ms" };
        system.start_executor(replica, flush_interval)
    });
    for process in audit_logs.iter().chain(&token_vaults).chain(&executors) {
        wait_serving(process.address(), "", WITHIN)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
    }

    // Alice's PAT, her two expiring OAuth accounts and schema-watcher's probe.
    system
        .vault_client()
        .put_credential(vault::PutCredentialRequest {
            tenant: ACME.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            token: ALICE_PAT.into(),
            replace_user: false,
        })
        .await
        .expect("alice's PAT");
    for account in EXPIRING {
        system
            .connect_oauth(account.tenant, account.connection, account.identifier)
            .await;
    }
    system.connect_oauth(GLOBEX, "asana-mcp", PROBE).await;
    let mut schema_watcher = system.start_watcher();
    wait_serving(schema_watcher.address(), "", WITHIN)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", schema_watcher.log()));

    let me: Value = sandbox
        .http
        .get(format!("{}/api/1.0/users/me", sandbox.url))
        .bearer_auth(ALICE_PAT)
        .send()
        .await
        .expect("the sandbox answers")
        .json()
        .await
        .expect("JSON");
    let alice = me["data"]["gid"].as_str().expect("alice's gid").to_owned();
    let workspace = me["data"]["workspaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["name"] == "Acme Corp")
        .and_then(|w| w["gid"].as_str())
        .expect("alice's paid workspace")
        .to_owned();
    sandbox.slow_down("/api/1.0/tasks", WRITE_LATENCY_MS).await;
    sandbox.slow_down("/api/1.0/users", READ_LATENCY_MS).await;

    // The callers, spread over the executors.
    let callers = Arc::new(Callers {
        executors: system
            .executor_at
            .iter()
            .map(|at| {
                let url = format!("http://{at}");
                ConnectorExecutorClient::new(
                    channel(&url, Some(&system.keys.agent)).expect("channel"),
                )
            })
            .collect(),
        running: AtomicBool::new(true),
        ledger: Mutex::default(),
    });
    let mut running = Vec::new();
    let write = Call {
        tenant: ACME,
        connection: "asana-pat",
        identifier: "alice",
        tool: "asana_api_create_task",
        input: json!({"data": {"name": "chaos {n}", "workspace": workspace}}).to_string(),
    };
    for writer in 0..WRITERS {
        running.push(tokio::spawn(caller(callers.clone(), write.clone(), writer)));
    }
    for account in EXPIRING {
        let read = Call {
            tenant: account.tenant,
            connection: account.connection,
            identifier: account.identifier,
            tool: "asana_api_get_user",
            input: json!({"user_gid": "me"}).to_string(),
        };
        for reader in 0..READERS {
            running.push(tokio::spawn(caller(callers.clone(), read.clone(), reader)));
        }
    }

    // Before the kill: tokens expire twice under load.
    let mut expiries = 0;
    assert_eventually!(
        WITHIN,
        async { callers.answered(None) >= 100 },
        "calls are answered: {}",
        callers.summary()
    );
    for _ in 0..2 {
        expire_all(&sandbox, &callers, &alice, &mut expiries).await;
    }
    assert_eventually!(
        WITHIN,
        async { system.probe_listings().await > 0 },
        "schema-watcher's probe lists the MCP tools through the executors"
    );
    let baseline = agentauth_testkit::eventually(WITHIN, || system.baseline())
        .await
        .expect("schema-watcher's first listing is its baseline");

    within_limits(&sandbox.stats().await);

    // One replica of each kind is killed while the callers go on.
    assert_eventually!(
        WITHIN,
        async { callers.answered(Some(KILLED)) >= 20 },
        "the executor to kill answers calls: {}",
        callers.summary()
    );
    for process in [
        &mut executors[KILLED],
        &mut token_vaults[0],
        &mut audit_logs[0],
        &mut schema_watcher,
    ] {
        process.kill().await.expect("SIGKILL");
    }
    let killed_answered = callers.answered_ids(KILLED);

    // The survivors carry on: tokens expire again, and are refreshed through the one
    // token-vault left.
    let answered_at_kill = callers.answered(None);
    expire_all(&sandbox, &callers, &alice, &mut expiries).await;
    assert_eventually!(
        WITHIN,
        async { callers.answered(None) >= answered_at_kill + 100 },
        "the survivors answer calls: {}",
        callers.summary()
    );
    let delivered = system.executed().await;
    assert!(
        killed_answered.is_disjoint(&delivered),
        "the events of the {} calls the killed executor answered were only in its journal",
        killed_answered.len()
    );

    // The killed executor and token-vault come back on their spools, schema-watcher on its
    // database.
    executors[KILLED] = system.start_executor(KILLED, "200ms");
    token_vaults[0] = system.start_vault(0);
    let listings_at_restart = system.probe_listings().await;
    schema_watcher = system.start_watcher();
    for process in [&executors[KILLED], &token_vaults[0], &schema_watcher] {
        wait_serving(process.address(), "", WITHIN)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
    }
    let restarted_answered = callers.answered(Some(KILLED));
    expire_all(&sandbox, &callers, &alice, &mut expiries).await;
    assert_eventually!(
        WITHIN,
        async { callers.answered(Some(KILLED)) >= restarted_answered + 20 },
        "the restarted executor answers calls again: {}",
        callers.summary()
    );
    assert_eventually!(
        WITHIN,
        async { system.probe_listings().await > listings_at_restart },
        "the restarted schema-watcher polls again"
    );

    callers.running.store(false, Ordering::Relaxed);
    for caller in running {
        caller.await.expect("caller");
    }
    eprintln!(
        "chaos: {}; {} answered by the killed executor before its kill; {expiries} expiries \
         per account",
        callers.summary(),
        killed_answered.len()
    );
    let ledger = std::mem::take(&mut *callers.ledger());
    let answered: HashSet<String> = ledger
        .answered
        .iter()
        .map(|a| a.execution_id.clone())
        .collect();

    // Every answered call's event is in the chain: the killed executor's journal too.
    let mut missing = answered.len();
    assert_eventually!(
        WITHIN,
        async {
            missing = answered.difference(&system.executed().await).count();
            missing == 0
        },
        "{missing} of {} answered calls have no tool.executed event",
        answered.len()
    );
    // Each tenant's chain is whole: its events numbered without a gap, each linked to the one
    // before (schema-watcher's polls go on adding to globex's, so up to what was read).
    for tenant in [ACME, GLOBEX] {
        let mut sequences: Vec<u64> = system
            .events(tenant, None)
            .await
            .iter()
            .map(|e| e.sequence)
            .collect();
        sequences.sort_unstable();
        let stored = sequences.len() as u64;
        assert!(
            sequences.iter().copied().eq(1..=stored),
            "{tenant}: sequences without a gap"
        );
        let verified = system
            .audit_client()
            .verify_chain(audit::VerifyChainRequest {
                tenant: tenant.into(),
                from_sequence: None,
                to_sequence: Some(stored),
            })
            .await
            .expect("VerifyChain")
            .into_inner();
        assert!(verified.ok, "{tenant}: {verified:?}");
        assert_eq!(verified.events_checked, stored, "{tenant}: {verified:?}");
    }

    // One refresh per expiry, each audited (token-vault's journal included).
    let stats = sandbox.stats().await;
    for account in EXPIRING {
        assert_eq!(
            refreshes(&stats, account.app),
            expiries,
            "{}: one refresh per expiry, however many executors and token-vaults saw the \
             token rejected",
            account.connection
        );
        let mut audited = 0;
        assert_eventually!(
            WITHIN,
            async {
                audited = system
                    .events(account.tenant, Some("credential.refreshed"))
                    .await
                    .iter()
                    .filter(|e| {
                        e.subject
                            .as_ref()
                            .is_some_and(|s| s.connection_name == account.connection)
                    })
                    .count() as u64;
                audited == expiries
            },
            "{}: {audited} refreshes audited of {expiries}",
            account.connection
        );
    }

    // Asana's limits, per token, never exceeded, after the kill either.
    within_limits(&stats);

    // schema-watcher's restart invented no drift, and kept its baseline.
    let mut watcher_client = system.watcher_client();
    let drift = watcher_client
        .list_drift(watcher::ListDriftRequest {
            include_approved: true,
            ..Default::default()
        })
        .await
        .expect("ListDrift")
        .into_inner()
        .drift;
    assert!(drift.is_empty(), "{drift:?}");
    let kept = system.baseline().await.expect("the baseline");
    assert_eq!(kept.snapshot_id, baseline.snapshot_id);

    assert!(
        ledger.unexpected.is_empty(),
        "every call was answered, left unanswered by a killed replica or told to retry later: \
         {:?}",
        ledger.unexpected
    );
}
