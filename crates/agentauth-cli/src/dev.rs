//! `agentauth dev` (what `make run` runs): the whole system on one machine.
//!
//! Starts an OpenBao dev server, writes a development configuration for each service under the
//! data folder (API keys are generated once and kept in `DATA/keys/`), starts the four services,
//! waits until all four report SERVING, and prints where they are. Ctrl-C (or SIGTERM) stops
//! every process it started, services first, and nothing else.
//!
//! Asana is the sandbox this command starts, or with `--asana-url` the real one (the user's own
//! OAuth apps, whose client secrets are read from the environment or a file into OpenBao, never
//! from a flag). The services' databases are SQLite files in the data folder, or with
//! `--database-url` PostgreSQL databases, one per service.
//!
//! Each service admits exactly the callers that use it, with the roles they need (`ADMITS`);
//! a developer's own callers go in `DATA/callers/<service>.toml` (`[[callers]]` entries, as
//! `agentauth keys generate` prints them), which is read at every start and never rewritten.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use agentauth_grpc::ApiKey;
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;

use crate::writeln_out;

/// Options of `agentauth dev`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where keys, configuration, databases and logs are kept.
    #[arg(long, default_value = ".data")]
    data_dir: PathBuf,
    /// The address every service listens on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// token-vault's port; connector-executor, audit-log and schema-watcher take the next three.
    #[arg(long, default_value_t = 50051)]
    first_port: u16,
    /// The OpenBao dev server's port.
    #[arg(long, default_value_t = 8200)]
    vault_port: u16,
    /// The Asana sandbox's port.
    #[arg(long, default_value_t = 50059)]
    sandbox_port: u16,
    /// token-vault's OAuth callback port (the sandbox's seeded apps redirect to 50060; for
    /// another port `dev` registers it with them).
    #[arg(long, default_value_t = 50060)]
    callback_port: u16,
    /// The OpenBao (or Vault) executable.
    #[arg(long, env = "AGENTAUTH_BAO", default_value = "bao")]
    bao: PathBuf,
    /// How long the services may take to report SERVING.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    ready_within: Duration,
    /// Real Asana in place of the sandbox: the origin of its app and API
    /// (`https://app.asana.com`: the REST API under `/api/1.0`, OAuth under `/-/oauth_*`).
    #[arg(long, value_name = "URL", requires = "client_id")]
    asana_url: Option<String>,
    /// Asana's MCP server (V2), used with --mcp-client-id.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://mcp.asana.com/v2/mcp"
    )]
    asana_mcp_url: String,
    /// Your Asana OAuth app's client id (with --asana-url); its secret is read from
    /// $AGENTAUTH_ASANA_CLIENT_SECRET or --client-secret-file, and kept in OpenBao.
    #[arg(long, requires = "asana_url")]
    client_id: Option<String>,
    /// A file holding the OAuth app's client secret.
    #[arg(long, value_name = "FILE", requires = "client_id")]
    client_secret_file: Option<PathBuf>,
    /// Your Asana MCP app's client id (with --asana-url; optional): adds the `asana-mcp`
    /// connection. Its secret: $AGENTAUTH_ASANA_MCP_CLIENT_SECRET or --mcp-client-secret-file.
    #[arg(long, requires = "asana_url")]
    mcp_client_id: Option<String>,
    /// A file holding the MCP app's client secret.
    #[arg(long, value_name = "FILE", requires = "mcp_client_id")]
    mcp_client_secret_file: Option<PathBuf>,
    /// With --asana-url: the public HTTPS URL that reaches the webhook intake (a tunnel to
    /// it). Without it webhooks are off: real Asana cannot reach this machine.
    #[arg(long, value_name = "URL", requires = "asana_url")]
    webhook_public_url: Option<String>,
    /// PostgreSQL in place of SQLite: `postgres://user@host:port/NAME`; each service gets a
    /// database of its own, `NAME_<service>`, created when missing.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
}

/// Environment variables the OAuth apps' client secrets are read from.
const CLIENT_SECRET_ENV: &str = "AGENTAUTH_ASANA_CLIENT_SECRET";
const MCP_CLIENT_SECRET_ENV: &str = "AGENTAUTH_ASANA_MCP_CLIENT_SECRET";

/// Where Asana is.
enum Asana {
    /// The sandbox this command starts on this address.
    Sandbox(SocketAddr),
    /// The real Asana, as the user's own apps.
    Real(RealAsana),
}

struct RealAsana {
    origin: String,
    mcp_url: String,
    rest_app: OAuthApp,
    mcp_app: Option<OAuthApp>,
    webhook_public_url: Option<String>,
}

/// An Asana OAuth app: its client id, and its secret as OpenBao will hold it.
struct OAuthApp {
    client_id: String,
    secret: Secret,
}

/// A secret read from the environment or a file; never printed.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Asana {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        let Some(origin) = &args.asana_url else {
            return Ok(Self::Sandbox(SocketAddr::new(args.host, args.sandbox_port)));
        };
        let origin = origin.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&origin)
            .map_err(|e| anyhow::anyhow!("--asana-url {origin}: {e}"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "https" | "http") && parsed.path() == "/",
            "--asana-url is the origin of Asana's app and API, such as https://app.asana.com"
        );
        let client_id = args.client_id.clone().unwrap_or_default();
        let rest_app = OAuthApp {
            secret: read_secret(
                CLIENT_SECRET_ENV,
                args.client_secret_file.as_deref(),
                "--client-secret-file",
            )?,
            client_id,
        };
        let mcp_app = match &args.mcp_client_id {
            None => None,
            Some(client_id) => Some(OAuthApp {
                client_id: client_id.clone(),
                secret: read_secret(
                    MCP_CLIENT_SECRET_ENV,
                    args.mcp_client_secret_file.as_deref(),
                    "--mcp-client-secret-file",
                )?,
            }),
        };
        Ok(Self::Real(RealAsana {
            origin,
            mcp_url: args.asana_mcp_url.clone(),
            rest_app,
            mcp_app,
            webhook_public_url: args.webhook_public_url.clone(),
        }))
    }

    /// The OAuth apps' client secrets, written into OpenBao's KV v2 mount `secret` where the
    /// connections' `client_secret` references point: (path under the mount, value).
    fn app_secrets(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::Sandbox(_) => SANDBOX_APP_SECRETS.to_vec(),
            Self::Real(real) => {
                let mut secrets = vec![(REST_APP_SECRET_PATH, real.rest_app.secret.0.as_str())];
                if let Some(mcp) = &real.mcp_app {
                    secrets.push((MCP_APP_SECRET_PATH, mcp.secret.0.as_str()));
                }
                secrets
            }
        }
    }

    /// Where the webhook intake listens and the URL Asana is given for it, if webhooks are on.
    fn webhooks(&self, intake: SocketAddr) -> Option<String> {
        match self {
            Self::Sandbox(_) => Some(format!("http://{intake}")),
            Self::Real(real) => real.webhook_public_url.clone(),
        }
    }
}

/// The secret in `$env`, or else in `file`; one of them must hold one.
fn read_secret(env: &str, file: Option<&Path>, flag: &str) -> anyhow::Result<Secret> {
    let text = match (std::env::var(env), file) {
        (_, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", file.display()))?,
        (Ok(value), None) => value,
        (Err(_), None) => {
            anyhow::bail!("the client secret comes from ${env} or {flag}; neither is set")
        }
    };
    let secret = text.trim();
    anyhow::ensure!(
        !secret.is_empty(),
        "the client secret from ${env} or {flag} is empty"
    );
    Ok(Secret(secret.to_owned()))
}

/// Where each service's database is: a SQLite file in the data folder, or a PostgreSQL
/// database of its own.
enum Databases {
    Sqlite(PathBuf),
    Postgres {
        server: String,
        prefix: String,
        query: String,
    },
}

impl Databases {
    fn from_args(args: &Args, data: &Path) -> anyhow::Result<Self> {
        let Some(url) = &args.database_url else {
            return Ok(Self::Sqlite(data.to_owned()));
        };
        let (address, query) = url
            .split_once('?')
            .map_or((url.as_str(), ""), |(a, q)| (a, q));
        let (server, prefix) = address
            .strip_prefix("postgres://")
            .or_else(|| address.strip_prefix("postgresql://"))
            .and_then(|rest| rest.rsplit_once('/'))
            .filter(|(host, _)| !host.is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--database-url is a PostgreSQL URL, postgres://user@host:port/NAME"
                )
            })?;
        anyhow::ensure!(
            !prefix.is_empty()
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "--database-url's database NAME (the prefix of the services' databases) is lowercase letters, digits and _"
        );
        Ok(Self::Postgres {
            server: format!("postgres://{server}"),
            prefix: prefix.to_owned(),
            query: query.to_owned(),
        })
    }

    /// The `[database] url` of `service`.
    fn url(&self, service: &str) -> String {
        match self {
            Self::Sqlite(data) => format!(
                "sqlite://{}?mode=rwc",
                data.join(format!("{service}.db")).display()
            ),
            Self::Postgres {
                server,
                prefix,
                query,
            } => {
                let name = format!("{prefix}_{}", service.replace('-', "_"));
                if query.is_empty() {
                    format!("{server}/{name}")
                } else {
                    format!("{server}/{name}?{query}")
                }
            }
        }
    }

    /// Creates the PostgreSQL databases that do not exist yet.
    async fn create(&self) -> anyhow::Result<()> {
        use sqlx::{AssertSqlSafe, Connection as _, Executor as _};
        let Self::Postgres {
            server,
            prefix,
            query,
        } = self
        else {
            return Ok(());
        };
        let admin = if query.is_empty() {
            format!("{server}/postgres")
        } else {
            format!("{server}/postgres?{query}")
        };
        let mut connection = sqlx::PgConnection::connect(&admin)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach PostgreSQL (--database-url): {e}"))?;
        for (service, _) in SERVICES {
            let name = format!("{prefix}_{}", service.replace('-', "_"));
            let exists: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                    .bind(&name)
                    .fetch_optional(&mut connection)
                    .await?;
            if exists.is_none() {
                connection
                    .execute(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot create the database {name}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// The services, in start order, with the callers each admits and their roles: what each
/// caller calls, nothing more. `agent` stands for an internal service (it connects users and
/// runs tools); `operator` administers.
const SERVICES: [(&str, &[Admitted]); 4] = [
    (
        "token-vault",
        &[
            ("connector-executor", &["executor"]),
            ("agent", &["onboarding"]),
            ("operator", &["operator"]),
        ],
    ),
    (
        "connector-executor",
        &[
            ("agent", &["executor", "proxy", "mcp", "events", "webhooks"]),
            ("operator", &["reader", "sessions"]),
            ("schema-watcher", &["watcher"]),
        ],
    ),
    (
        "audit-log",
        &[
            ("connector-executor", &["writer"]),
            ("token-vault", &["writer"]),
            ("schema-watcher", &["writer"]),
            ("operator", &["operator"]),
        ],
    ),
    (
        "schema-watcher",
        &[
            ("connector-executor", &["executor"]),
            ("operator", &["operator"]),
        ],
    ),
];

/// A caller a service admits, and its roles there.
type Admitted = (&'static str, &'static [&'static str]);

/// Every caller that gets a key.
const CALLERS: [&str; 5] = [
    "operator",
    "agent",
    "connector-executor",
    "token-vault",
    "schema-watcher",
];

/// The virtual MCP server `make run` declares: the signed-in user's own profile.
const VIRTUAL_SERVER: &str = "people";

/// Where connector-executor serves virtual MCP endpoints: the port after the four services'.
fn virtual_mcp_address(addresses: &[SocketAddr]) -> SocketAddr {
    let last = addresses[addresses.len() - 1];
    SocketAddr::new(last.ip(), last.port() + 1)
}

/// Where connector-executor takes Asana webhooks: the port after virtual MCP's.
fn webhook_intake_address(addresses: &[SocketAddr]) -> SocketAddr {
    let virtual_mcp = virtual_mcp_address(addresses);
    SocketAddr::new(virtual_mcp.ip(), virtual_mcp.port() + 1)
}

/// A process this command started, stopped when this value is dropped.
struct Started {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let data = absolute(&args.data_dir)?;
    for folder in ["keys", "config", "logs", "callers"] {
        std::fs::create_dir_all(data.join(folder))?;
    }
    let mut own_callers = Vec::new();
    for (name, _) in SERVICES {
        own_callers.push(own_callers_of(&data, name)?);
    }
    let asana = Asana::from_args(&args)?;
    let databases = Databases::from_args(&args, &data)?;
    let vault = SocketAddr::new(args.host, args.vault_port);
    let callback = SocketAddr::new(args.host, args.callback_port);
    let addresses: Vec<SocketAddr> = (0..SERVICES.len() as u16)
        .map(|i| SocketAddr::new(args.host, args.first_port + i))
        .collect();
    let virtual_mcp = virtual_mcp_address(&addresses);
    let intake = webhook_intake_address(&addresses);
    let sandbox = match &asana {
        Asana::Sandbox(sandbox) => Some(*sandbox),
        Asana::Real(_) => None,
    };
    for address in [&vault, &callback, &virtual_mcp, &intake]
        .into_iter()
        .chain(&sandbox)
        .chain(&addresses)
    {
        std::net::TcpListener::bind(address).map_err(|e| {
            anyhow::anyhow!("{address} is not free ({e}); is another `make run` running?")
        })?;
    }
    let mut keys = Vec::new();
    for caller in CALLERS {
        keys.push((
            caller,
            load_or_create_key(&data.join("keys").join(format!("{caller}.key")))?,
        ));
    }

    let control_key = load_or_create_key(&data.join("keys").join("sandbox-control.key"))?;
    // Signs virtual MCP bearers; kept, so minted sessions survive a restart.
    load_or_create_key(&data.join("keys").join("virtual-mcp-signing.key"))?;
    let mut started = Vec::new();
    let result = tokio::select! {
        result = async {
            if let Some(sandbox) = sandbox {
                start_sandbox(sandbox, &control_key, &data, &mut started).await?;
                register_callback(sandbox, &control_key, callback).await?;
            }
            databases.create().await?;
            let configs = Configs {
                keys: &keys,
                own_callers: &own_callers,
                callback,
                asana: &asana,
                databases: &databases,
            };
            start_all(&args, &data, vault, &addresses, &configs, &mut started).await?;
            match sandbox {
                Some(sandbox) => {
                    let agent = &keys.iter().find(|(name, _)| *name == "agent").expect("the agent's key").1;
                    connect_tool_lister(addresses[0], agent, sandbox).await
                }
                None => Ok(()),
            }
        } => result,
        () = agentauth_grpc::shutdown_signal() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    let code = match result {
        Ok(()) => {
            print_running(&data, vault, &asana, callback, &addresses)?;
            wait_for_stop_or_exit(&mut started).await
        }
        Err(error) => {
            eprintln!("agentauth dev: {error:#}");
            ExitCode::FAILURE
        }
    };
    stop_all(started).await;
    Ok(code)
}

/// Starts the Asana sandbox (seeded, control API on) and waits until it accepts connections.
async fn start_sandbox(
    address: SocketAddr,
    control_key: &ApiKey,
    data: &Path,
    started: &mut Vec<Started>,
) -> anyhow::Result<()> {
    let mut command = Command::new(sibling_binary("asana-sandbox")?);
    command
        .args(["--listen", &address.to_string()])
        .env("ASANA_SANDBOX_CONTROL_KEY", control_key.expose());
    started.push(spawn("asana-sandbox", command, data)?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        check_still_running(started)?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "the Asana sandbox did not start within 20s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(())
}

/// What the services' configurations are written from besides addresses.
struct Configs<'a> {
    keys: &'a [(&'a str, ApiKey)],
    /// Per service (in `SERVICES` order), the developer's own `[[server.callers]]` entries.
    own_callers: &'a [String],
    /// Where token-vault serves its OAuth callback.
    callback: SocketAddr,
    asana: &'a Asana,
    databases: &'a Databases,
}

async fn start_all(
    args: &Args,
    data: &Path,
    vault: SocketAddr,
    addresses: &[SocketAddr],
    configs: &Configs<'_>,
    started: &mut Vec<Started>,
) -> anyhow::Result<()> {
    let root_token = ApiKey::generate();
    let vault_url = format!("http://{vault}");
    let mut bao = Command::new(&args.bao);
    // The root token goes by environment, never on a command line others can read.
    bao.args(["server", "-dev", "-dev-no-store-token"])
        .env("VAULT_DEV_ROOT_TOKEN_ID", root_token.expose())
        .env("VAULT_DEV_LISTEN_ADDRESS", vault.to_string());
    started.push(spawn("openbao", bao, data)?);
    wait_for_vault(&args.bao, &vault_url, &root_token, started).await?;
    put_app_secrets(
        &args.bao,
        &vault_url,
        &root_token,
        &configs.asana.app_secrets(),
    )
    .await?;

    for (i, (name, _)) in SERVICES.iter().enumerate() {
        let config = data.join("config").join(format!("{name}.toml"));
        // Private like the keys: with --database-url the file holds its URL, password included.
        write_secret_file(
            &config,
            &service_config(i, addresses, configs, &vault_url, data),
        )?;
        let mut command = Command::new(sibling_binary(name)?);
        command.arg("--config").arg(&config);
        if *name == "token-vault" {
            command.env("VAULT_TOKEN", root_token.expose());
        }
        started.push(spawn(name, command, data)?);
    }

    let deadline = Instant::now() + args.ready_within;
    for (i, (name, _)) in SERVICES.iter().enumerate() {
        let url = format!("http://{}", addresses[i]);
        loop {
            if let Ok(ServingStatus::Serving) = crate::status::health(&url).await {
                break;
            }
            check_still_running(started)?;
            anyhow::ensure!(
                Instant::now() < deadline,
                "{name} did not report SERVING within {:?}; see {}",
                args.ready_within,
                data.join("logs").join(format!("{name}.log")).display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// The development configuration of the `index`th service.
fn service_config(
    index: usize,
    addresses: &[SocketAddr],
    configs: &Configs<'_>,
    vault_url: &str,
    data: &Path,
) -> String {
    let (name, admits) = SERVICES[index];
    let mut config = format!(
        "# Written by `agentauth dev`; rewritten at every start. Add your own callers to\n# {}.\n\n[server]\nlisten = \"{}\"\nshutdown_grace = \"5s\"\n",
        data.join("callers").join(format!("{name}.toml")).display(),
        addresses[index]
    );
    for (caller, roles) in admits {
        let Some((_, key)) = configs.keys.iter().find(|(k, _)| k == caller) else {
            continue;
        };
        let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
        // Any tenant: a developer names tenants freely on this machine.
        let _ = write!(
            config,
            "\n[[server.callers]]\nname = \"{caller}\"\nkey_sha256 = \"{}\"\ntenants = [\"*\"]\nroles = [{}]\n",
            key.hash(),
            roles.join(", ")
        );
    }
    config.push_str(&configs.own_callers[index]);
    match name {
        "token-vault" => {
            let _ = write!(
                config,
                "\n[vault]\naddr = \"{vault_url}\"\n\n[database]\nurl = \"{}\"\n\n[audit]\nurl = \"http://{}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\n\n[oauth]\nhttp_listen = \"{}\"\n{}",
                configs.databases.url(name),
                addresses[2],
                data.join("keys").join("token-vault.key").display(),
                data.join("audit-spool").join("token-vault").display(),
                configs.callback,
                connections(configs.asana, &redirect_url(configs.callback)),
            );
        }
        "connector-executor" => {
            let _ = write!(
                config,
                "\n[token_vault]\nurl = \"http://{}\"\napi_key_file = \"{}\"\n\n[audit]\nurl = \"http://{}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\n",
                addresses[0],
                data.join("keys").join("connector-executor.key").display(),
                addresses[2],
                data.join("keys").join("connector-executor.key").display(),
                data.join("audit-spool")
                    .join("connector-executor")
                    .display(),
            );
            let _ = write!(
                config,
                "\n# A virtual MCP server for MCP clients: `agentauth mcp mint --virtual-server {VIRTUAL_SERVER} …`;\n# its sessions are recorded (to list and revoke them) in the database.\n[database]\nurl = \"{}\"\n\n[virtual_mcp]\nlisten = \"{}\"\n\n[[virtual_mcp.signing_keys]]\nid = \"dev\"\nkey_file = \"{}\"\n\n[[virtual_servers]]\nname = \"{VIRTUAL_SERVER}\"\nminters = [\"agent\"]\n\n[[virtual_servers.tools]]\nconnection = \"asana-pat\"\ntool = \"asana_user_me\"\n\n[[virtual_servers.tools]]\nconnection = \"asana-pat\"\ntool = \"asana_api_get_user\"\nfixed_inputs = {{ user_gid = \"me\" }}\n",
                configs.databases.url(name),
                virtual_mcp_address(addresses),
                data.join("keys").join("virtual-mcp-signing.key").display(),
            );
            if matches!(configs.asana, Asana::Sandbox(_)) {
                let _ = write!(
                    config,
                    "\n# ListTools on asana-mcp lists what this account's session sees.\n[connections.asana-mcp.list_tools_as]\ntenant = \"{TOOL_LISTER_TENANT}\"\nidentifier = \"{TOOL_LISTER}\"\n\n# MCP tools are checked against the baselines schema-watcher approved.\n[schema_watcher]\nurl = \"http://{}\"\napi_key_file = \"{}\"\n",
                    addresses[3],
                    data.join("keys").join("connector-executor.key").display(),
                );
            }
            let intake = webhook_intake_address(addresses);
            if let Some(public_url) = configs.asana.webhooks(intake) {
                let _ = write!(
                    config,
                    "\n# Asana webhooks: `agentauth events subscribe|follow`; Asana delivers to this intake.\n[webhooks]\nlisten = \"{intake}\"\npublic_url = \"{public_url}\"\n",
                );
            }
        }
        "schema-watcher" => {
            let _ = write!(
                config,
                "\n[database]\nurl = \"{}\"\n\n[executor]\nurl = \"http://{}\"\napi_key_file = \"{}\"\n\n[audit]\nurl = \"http://{}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\n",
                configs.databases.url(name),
                addresses[1],
                data.join("keys").join("schema-watcher.key").display(),
                addresses[2],
                data.join("keys").join("schema-watcher.key").display(),
                data.join("audit-spool").join("schema-watcher").display(),
            );
            if matches!(configs.asana, Asana::Sandbox(_)) {
                let _ = write!(
                    config,
                    "\n# The sandbox's MCP tools, listed as the tool lister; warn mode, and its first listing\n# approved, so that the sandbox's own changes show as drift.\n[[watches]]\nconnection = \"asana-mcp\"\ntenant = \"{TOOL_LISTER_TENANT}\"\nidentifier = \"{TOOL_LISTER}\"\ninterval = \"60s\"\njitter = \"5s\"\nmode = \"warn\"\nauto_approve_first = true\n",
                );
            }
        }
        "audit-log" => {
            let _ = write!(
                config,
                "\n[database]\nurl = \"{}\"\n",
                configs.databases.url(name)
            );
        }
        _ => {}
    }
    config
}

/// The account whose MCP session `ListTools` on `asana-mcp` reads before any user's call:
/// connected at every start, consenting as the sandbox's first seeded user.
const TOOL_LISTER_TENANT: &str = "agentauth-dev";
const TOOL_LISTER: &str = "mcp-tool-lister";

/// Connects the tool lister's `asana-mcp` account: a link from token-vault (as the agent, an
/// onboarding caller), the sandbox's consent form answered with Allow, the callback followed.
async fn connect_tool_lister(
    token_vault: SocketAddr,
    agent: &ApiKey,
    sandbox: SocketAddr,
) -> anyhow::Result<()> {
    use agentauth_proto::vault::v1 as pb;
    let channel = agentauth_grpc::client::channel(&format!("http://{token_vault}"), Some(agent))?;
    let link = pb::token_vault_client::TokenVaultClient::new(channel)
        .create_authorization_link(pb::CreateAuthorizationLinkRequest {
            tenant: TOOL_LISTER_TENANT.into(),
            connection_name: "asana-mcp".into(),
            identifier: TOOL_LISTER.into(),
            return_url: None,
            replace_user: true,
        })
        .await
        .map_err(|status| anyhow::anyhow!("cannot link the MCP tool lister: {}", status.message()))?
        .into_inner()
        .authorization_url;
    let url = reqwest::Url::parse(&link)?;
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    form.push(("decision".into(), "allow".into()));
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let consent = browser
        .post(format!("http://{sandbox}/-/oauth_authorize"))
        .form(&form)
        .send()
        .await?;
    let callback = consent
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the sandbox did not approve the MCP tool lister (HTTP {})",
                consent.status()
            )
        })?
        .to_owned();
    let connected = browser.get(&callback).send().await?;
    anyhow::ensure!(
        connected.status().is_success(),
        "token-vault did not connect the MCP tool lister (HTTP {})",
        connected.status()
    );
    Ok(())
}

/// The redirect URI of token-vault's OAuth callback on `callback`.
fn redirect_url(callback: SocketAddr) -> String {
    format!("http://{callback}/oauth/callback")
}

/// Lets the sandbox's seeded apps (which redirect to `asana_sandbox::seed::REDIRECT_URI`)
/// redirect to token-vault's callback on `callback` too, when it is elsewhere.
async fn register_callback(
    sandbox: SocketAddr,
    control_key: &ApiKey,
    callback: SocketAddr,
) -> anyhow::Result<()> {
    let redirect = redirect_url(callback);
    if redirect == asana_sandbox_seed_redirect() {
        return Ok(());
    }
    let http = reqwest::Client::new();
    for ((client_id, secret), kind) in [(SANDBOX_REST_APP, "rest"), (SANDBOX_MCP_APP, "mcp")] {
        let registered = http
            .post(format!("http://{sandbox}/_sandbox/apps"))
            .header("X-Sandbox-Control-Key", control_key.expose())
            .json(&serde_json::json!({
                "client_id": client_id,
                "client_secret": secret,
                "name": client_id,
                "kind": kind,
                "redirect_uris": [asana_sandbox_seed_redirect(), redirect],
            }))
            .send()
            .await?;
        anyhow::ensure!(
            registered.status().is_success(),
            "the sandbox did not take the callback {redirect} for {client_id} (HTTP {})",
            registered.status()
        );
    }
    Ok(())
}

/// The redirect URI the sandbox's seeded apps register.
fn asana_sandbox_seed_redirect() -> String {
    redirect_url(SocketAddr::from(([127, 0, 0, 1], 50060)))
}

/// Where the OAuth apps' client secrets are kept in OpenBao's KV v2 mount `secret` (field
/// `client_secret`), as the connections' `client_secret` references name them.
const REST_APP_SECRET_PATH: &str = "agentauth/apps/asana";
const MCP_APP_SECRET_PATH: &str = "agentauth/apps/asana-mcp";

/// The sandbox's seeded OAuth apps (`asana_sandbox::seed::{REST,MCP}_CLIENT_{ID,SECRET}`).
const SANDBOX_REST_APP: (&str, &str) = ("sandbox-rest-app", "sandbox-rest-secret");
const SANDBOX_MCP_APP: (&str, &str) = ("sandbox-mcp-app", "sandbox-mcp-secret");
const SANDBOX_APP_SECRETS: [(&str, &str); 2] = [
    (REST_APP_SECRET_PATH, SANDBOX_REST_APP.1),
    (MCP_APP_SECRET_PATH, SANDBOX_MCP_APP.1),
];

/// The connections token-vault declares in development: Asana's REST app, its MCP app (the
/// sandbox's, or the user's if they named one) and PATs and service accounts. The OAuth apps'
/// client secrets are read from OpenBao (see [`Asana::app_secrets`]).
fn connections(asana: &Asana, redirect: &str) -> String {
    let (origin, rest_client, mcp) = match asana {
        Asana::Sandbox(sandbox) => (
            format!("http://{sandbox}"),
            SANDBOX_REST_APP.0.to_owned(),
            Some((
                SANDBOX_MCP_APP.0.to_owned(),
                format!("http://{sandbox}/v2/mcp"),
            )),
        ),
        Asana::Real(real) => (
            real.origin.clone(),
            real.rest_app.client_id.clone(),
            real.mcp_app
                .as_ref()
                .map(|app| (app.client_id.clone(), real.mcp_url.clone())),
        ),
    };
    let oauth = |client_id: &str, secret_path: &str| {
        format!(
            "auth = \"oauth\"\nclient_id = {client_id:?}\nclient_secret = \"vault:secret/data/{secret_path}#client_secret\"\nscopes = [\"default\"]\nredirect_url = \"{redirect}\"\nauthorize_url = \"{origin}/-/oauth_authorize\"\ntoken_url = \"{origin}/-/oauth_token\"\nrevoke_url = \"{origin}/-/oauth_revoke\"\n"
        )
    };
    let api = format!("{origin}/api/1.0");
    let mut out = format!(
        "\n[[connections]]\nname = \"asana\"\nkind = \"rest\"\n{}api_base_url = \"{api}\"\n",
        oauth(&rest_client, REST_APP_SECRET_PATH)
    );
    if let Some((client_id, mcp_url)) = mcp {
        let _ = write!(
            out,
            "\n[[connections]]\nname = \"asana-mcp\"\nkind = \"mcp\"\n{}resource = \"{mcp_url}\"\nmcp_url = \"{mcp_url}\"\n",
            oauth(&client_id, MCP_APP_SECRET_PATH)
        );
    }
    let _ = write!(
        out,
        "\n[[connections]]\nname = \"asana-pat\"\nkind = \"rest\"\nauth = \"pat\"\napi_base_url = \"{api}\"\n\n[[connections]]\nname = \"asana-service-account\"\nkind = \"rest\"\nauth = \"service_account\"\napi_base_url = \"{api}\"\n"
    );
    out
}

fn spawn(name: &'static str, mut command: Command, data: &Path) -> anyhow::Result<Started> {
    let log = data.join("logs").join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
    Ok(Started { name, child, log })
}

async fn wait_for_vault(
    bao: &Path,
    url: &str,
    token: &ApiKey,
    started: &mut [Started],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = Command::new(bao)
            .arg("status")
            .env("VAULT_ADDR", url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        if status.success() {
            break;
        }
        check_still_running(started)?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "OpenBao did not start within 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let enabled = Command::new(bao)
        .args(["secrets", "enable", "transit"])
        .env("VAULT_ADDR", url)
        .env("VAULT_TOKEN", token.expose())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(
        enabled.success(),
        "could not enable OpenBao's transit engine"
    );
    Ok(())
}

/// Writes each OAuth app's client secret into OpenBao, by standard input: never on a command
/// line others can read.
async fn put_app_secrets(
    bao: &Path,
    url: &str,
    token: &ApiKey,
    secrets: &[(&str, &str)],
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    for (path, secret) in secrets {
        let mut put = Command::new(bao)
            .args(["kv", "put", "-mount=secret", path, "client_secret=-"])
            .env("VAULT_ADDR", url)
            .env("VAULT_TOKEN", token.expose())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if let Some(mut stdin) = put.stdin.take() {
            stdin.write_all(secret.as_bytes()).await?;
        }
        anyhow::ensure!(
            put.wait().await?.success(),
            "could not write the OAuth app's client secret secret/{path} into OpenBao"
        );
    }
    Ok(())
}

fn check_still_running(started: &mut [Started]) -> anyhow::Result<()> {
    for process in started.iter_mut() {
        if let Some(status) = process.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); its log says:\n{}",
                process.name,
                tail(&process.log, 20)
            );
        }
    }
    Ok(())
}

fn print_running(
    data: &Path,
    vault: SocketAddr,
    asana: &Asana,
    callback: SocketAddr,
    addresses: &[SocketAddr],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln_out(
        &mut out,
        "agentauth is running; Ctrl-C stops everything it started.\n",
    )?;
    for (i, (name, _)) in SERVICES.iter().enumerate() {
        writeln_out(
            &mut out,
            &format!("  {name:<20} http://{}  (gRPC)", addresses[i]),
        )?;
    }
    writeln_out(
        &mut out,
        &format!(
            "  {:<20} http://{}/mcp/{VIRTUAL_SERVER}/…  (agentauth mcp mint --virtual-server {VIRTUAL_SERVER} --tenant T --identifier U)",
            "virtual MCP",
            virtual_mcp_address(addresses)
        ),
    )?;
    let intake = webhook_intake_address(addresses);
    let webhooks = match asana.webhooks(intake) {
        Some(public_url) => format!(
            "http://{intake}/webhooks/…  (Asana calls {public_url}; agentauth events subscribe --tenant T --connection asana-pat --identifier U --resource GID)"
        ),
        None => "off: Asana cannot reach this machine (--webhook-public-url names a tunnel to the intake)".to_owned(),
    };
    writeln_out(&mut out, &format!("  {:<20} {webhooks}", "webhook intake"))?;
    writeln_out(
        &mut out,
        &format!("  {:<20} http://{vault}", "openbao (dev)"),
    )?;
    let (asana_line, try_asana) = match asana {
        Asana::Sandbox(sandbox) => (
            format!(
                "  {:<20} http://{sandbox}/api/1.0  (seeded PAT: sandbox-pat-alice; control key in {})",
                "asana sandbox",
                data.join("keys/sandbox-control.key").display()
            ),
            format!(
                "curl -H 'Authorization: Bearer sandbox-pat-alice' http://{sandbox}/api/1.0/users/me"
            ),
        ),
        Asana::Real(real) => (
            format!(
                "  {:<20} {}/api/1.0{}  (your OAuth apps must allow the redirect URL {})",
                "asana",
                real.origin,
                real.mcp_app
                    .as_ref()
                    .map_or(String::new(), |_| format!(", MCP {}", real.mcp_url)),
                redirect_url(callback)
            ),
            format!(
                "target/debug/agentauth --key-file {} accounts connect --tenant demo --connection asana --identifier me",
                data.join("keys/agent.key").display()
            ),
        ),
    };
    writeln_out(&mut out, &asana_line)?;
    writeln_out(
        &mut out,
        &format!("  {:<20} {}", "logs", data.join("logs").display()),
    )?;
    writeln_out(
        &mut out,
        &format!(
            "  {:<20} {}  (internal services' roles: onboarding, executor, proxy, mcp)",
            "agent API key",
            data.join("keys/agent.key").display()
        ),
    )?;
    writeln_out(
        &mut out,
        &format!(
            "  {:<20} {}  (administration: accounts, tenants, audit)",
            "operator API key",
            data.join("keys/operator.key").display()
        ),
    )?;
    writeln_out(
        &mut out,
        &format!(
            "  {:<20} {}/<service>.toml  ([[callers]] entries, read at every start)",
            "your own callers",
            data.join("callers").display()
        ),
    )?;
    writeln_out(
        &mut out,
        &format!(
            "\nTry, in another terminal:\n  target/debug/agentauth status\n  \
             target/debug/agentauth --key-file {} audit verify --tenant demo\n  \
             {try_asana}",
            data.join("keys/operator.key").display()
        ),
    )?;
    Ok(())
}

async fn wait_for_stop_or_exit(started: &mut [Started]) -> ExitCode {
    let mut poll = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            () = agentauth_grpc::shutdown_signal() => return ExitCode::SUCCESS,
            _ = poll.tick() => {
                if let Err(error) = check_still_running(started) {
                    eprintln!("agentauth dev: {error:#}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
}

/// Stops the services (SIGTERM, so they drain), newest first, then OpenBao.
async fn stop_all(mut started: Vec<Started>) {
    while let Some(mut process) = started.pop() {
        if let Some(pid) = process.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(20), process.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "agentauth dev: {} did not stop within 20s; killing it",
                process.name
            );
            let _ = process.child.kill().await;
        }
    }
    eprintln!("agentauth dev: stopped");
}

fn load_or_create_key(path: &Path) -> anyhow::Result<ApiKey> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(ApiKey::new(&text));
    }
    let key = ApiKey::generate();
    write_secret_file(path, key.expose())?;
    Ok(key)
}

/// Writes `content` to `path` so that no other user can ever read it: a new file created
/// with mode 0600 beside it, then renamed into place.
fn write_secret_file(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&partial)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", partial.display()))?;
    file.write_all(content.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// The developer's own callers of `service`, as `[[server.callers]]` entries for its
/// configuration: read from `DATA/callers/<service>.toml`, whose only key is `callers`, an
/// array of caller tables. Its entries are checked by the service itself when it starts.
fn own_callers_of(data: &Path, service: &str) -> anyhow::Result<String> {
    let path = data.join("callers").join(format!("{service}.toml"));
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(error) => anyhow::bail!("cannot read {}: {error}", path.display()),
    };
    let file: toml::Table = text
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if let Some(key) = file.keys().find(|k| *k != "callers") {
        anyhow::bail!(
            "{}: unknown key `{key}`; the file holds only [[callers]] entries",
            path.display()
        );
    }
    let Some(callers) = file.get("callers") else {
        return Ok(String::new());
    };
    let entries = callers.as_array().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: `callers` must be an array of tables ([[callers]])",
            path.display()
        )
    })?;
    let mut out = String::new();
    for entry in entries {
        let table = entry.as_table().ok_or_else(|| {
            anyhow::anyhow!("{}: each [[callers]] entry is a table", path.display())
        })?;
        let _ = write!(
            out,
            "\n# from {}\n[[server.callers]]\n{}",
            path.display(),
            toml::to_string(table)?
        );
    }
    Ok(out)
}

/// A service binary built beside this one (`target/debug/audit-log` next to `agentauth`).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is not built (run `make build`)",
        path.display()
    );
    Ok(path)
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
