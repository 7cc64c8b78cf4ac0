//! `agentauth dev` (what `make run` runs): the whole system on one machine.
//!
//! Starts an OpenBao dev server, writes a development configuration for each service under the
//! data folder (API keys are generated once and kept in `DATA/keys/`), starts the four services,
//! waits until all four report SERVING, and prints where they are. Ctrl-C (or SIGTERM) stops
//! every process it started, services first, and nothing else.
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
    let vault = SocketAddr::new(args.host, args.vault_port);
    let sandbox = SocketAddr::new(args.host, args.sandbox_port);
    let callback = SocketAddr::new(args.host, args.callback_port);
    let addresses: Vec<SocketAddr> = (0..SERVICES.len() as u16)
        .map(|i| SocketAddr::new(args.host, args.first_port + i))
        .collect();
    let virtual_mcp = virtual_mcp_address(&addresses);
    let intake = webhook_intake_address(&addresses);
    for address in [&vault, &sandbox, &callback, &virtual_mcp, &intake]
        .into_iter()
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
            start_sandbox(sandbox, &control_key, &data, &mut started).await?;
            register_callback(sandbox, &control_key, callback).await?;
            let configs = Configs {
                keys: &keys,
                own_callers: &own_callers,
                callback,
            };
            start_all(&args, &data, vault, &addresses, &configs, &mut started).await?;
            let agent = &keys.iter().find(|(name, _)| *name == "agent").expect("the agent's key").1;
            connect_tool_lister(addresses[0], agent, sandbox).await
        } => result,
        () = agentauth_grpc::shutdown_signal() => Err(anyhow::anyhow!("interrupted while starting")),
    };
    let code = match result {
        Ok(()) => {
            print_running(&data, vault, sandbox, &addresses)?;
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
    let sandbox_url = format!("http://{}", SocketAddr::new(args.host, args.sandbox_port));
    let mut bao = Command::new(&args.bao);
    // The root token goes by environment, never on a command line others can read.
    bao.args(["server", "-dev", "-dev-no-store-token"])
        .env("VAULT_DEV_ROOT_TOKEN_ID", root_token.expose())
        .env("VAULT_DEV_LISTEN_ADDRESS", vault.to_string());
    started.push(spawn("openbao", bao, data)?);
    wait_for_vault(&args.bao, &vault_url, &root_token, started).await?;

    for (i, (name, _)) in SERVICES.iter().enumerate() {
        let config = data.join("config").join(format!("{name}.toml"));
        std::fs::write(
            &config,
            service_config(i, addresses, configs, &vault_url, &sandbox_url, data),
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
    sandbox_url: &str,
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
                "\n[vault]\naddr = \"{vault_url}\"\n\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n\n[audit]\nurl = \"http://{}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\n\n[oauth]\nhttp_listen = \"{}\"\n{}",
                data.join("token-vault.db").display(),
                addresses[2],
                data.join("keys").join("token-vault.key").display(),
                data.join("audit-spool").join("token-vault").display(),
                configs.callback,
                sandbox_connections(sandbox_url, &redirect_url(configs.callback)),
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
                "\n# A virtual MCP server for MCP clients: `agentauth mcp mint --virtual-server {VIRTUAL_SERVER} …`;\n# its sessions are recorded (to list and revoke them) in the database.\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n\n[virtual_mcp]\nlisten = \"{}\"\n\n[[virtual_mcp.signing_keys]]\nid = \"dev\"\nkey_file = \"{}\"\n\n[[virtual_servers]]\nname = \"{VIRTUAL_SERVER}\"\nminters = [\"agent\"]\n\n[[virtual_servers.tools]]\nconnection = \"asana-pat\"\ntool = \"asana_user_me\"\n\n[[virtual_servers.tools]]\nconnection = \"asana-pat\"\ntool = \"asana_api_get_user\"\nfixed_inputs = {{ user_gid = \"me\" }}\n\n# ListTools on asana-mcp lists what this account's session sees.\n[connections.asana-mcp.list_tools_as]\ntenant = \"{TOOL_LISTER_TENANT}\"\nidentifier = \"{TOOL_LISTER}\"\n\n# MCP tools are checked against the baselines schema-watcher approved.\n[schema_watcher]\nurl = \"http://{}\"\napi_key_file = \"{}\"\n\n# Asana webhooks: `agentauth events subscribe|follow`; the sandbox delivers to this intake.\n[webhooks]\nlisten = \"{intake}\"\npublic_url = \"http://{intake}\"\n",
                data.join("connector-executor.db").display(),
                virtual_mcp_address(addresses),
                data.join("keys").join("virtual-mcp-signing.key").display(),
                addresses[3],
                data.join("keys").join("connector-executor.key").display(),
                intake = webhook_intake_address(addresses),
            );
        }
        "schema-watcher" => {
            let _ = write!(
                config,
                "\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n\n[executor]\nurl = \"http://{}\"\napi_key_file = \"{}\"\n\n[audit]\nurl = \"http://{}\"\napi_key_file = \"{}\"\nspool_dir = \"{}\"\n\n# The sandbox's MCP tools, listed as the tool lister; warn mode, and its first listing\n# approved, so that the sandbox's own changes show as drift.\n[[watches]]\nconnection = \"asana-mcp\"\ntenant = \"{TOOL_LISTER_TENANT}\"\nidentifier = \"{TOOL_LISTER}\"\ninterval = \"60s\"\njitter = \"5s\"\nmode = \"warn\"\nauto_approve_first = true\n",
                data.join("schema-watcher.db").display(),
                addresses[1],
                data.join("keys").join("schema-watcher.key").display(),
                addresses[2],
                data.join("keys").join("schema-watcher.key").display(),
                data.join("audit-spool").join("schema-watcher").display(),
            );
        }
        "audit-log" => {
            let _ = write!(
                config,
                "\n[database]\nurl = \"sqlite://{}?mode=rwc\"\n",
                data.join("audit-log.db").display()
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
    for (client_id, kind, (_, _, secret)) in [
        ("sandbox-rest-app", "rest", SANDBOX_APP_SECRETS[0]),
        ("sandbox-mcp-app", "mcp", SANDBOX_APP_SECRETS[1]),
    ] {
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

/// The sandbox's seeded OAuth app secrets (`asana_sandbox::seed::{REST,MCP}_CLIENT_SECRET`),
/// written into OpenBao's KV v2 mount `secret` where [`sandbox_connections`]' `client_secret`
/// references point: (path under the mount, field, value).
const SANDBOX_APP_SECRETS: &[(&str, &str, &str)] = &[
    (
        "agentauth/apps/asana",
        "client_secret",
        "sandbox-rest-secret",
    ),
    (
        "agentauth/apps/asana-mcp",
        "client_secret",
        "sandbox-mcp-secret",
    ),
];

/// The connections token-vault declares in development: the sandbox's REST app, MCP app and
/// PATs. The OAuth apps' client secrets are read from OpenBao (see [`SANDBOX_APP_SECRETS`]).
fn sandbox_connections(sandbox_url: &str, redirect: &str) -> String {
    format!(
        r#"
[[connections]]
name = "asana"
kind = "rest"
auth = "oauth"
client_id = "sandbox-rest-app"
client_secret = "vault:secret/data/agentauth/apps/asana#client_secret"
scopes = ["default"]
redirect_url = "{redirect}"
authorize_url = "{sandbox_url}/-/oauth_authorize"
token_url = "{sandbox_url}/-/oauth_token"
revoke_url = "{sandbox_url}/-/oauth_revoke"
api_base_url = "{sandbox_url}/api/1.0"

[[connections]]
name = "asana-mcp"
kind = "mcp"
auth = "oauth"
client_id = "sandbox-mcp-app"
client_secret = "vault:secret/data/agentauth/apps/asana-mcp#client_secret"
scopes = ["default"]
redirect_url = "{redirect}"
authorize_url = "{sandbox_url}/-/oauth_authorize"
token_url = "{sandbox_url}/-/oauth_token"
revoke_url = "{sandbox_url}/-/oauth_revoke"
resource = "{sandbox_url}/v2/mcp"
mcp_url = "{sandbox_url}/v2/mcp"

[[connections]]
name = "asana-pat"
kind = "rest"
auth = "pat"
api_base_url = "{sandbox_url}/api/1.0"

[[connections]]
name = "asana-service-account"
kind = "rest"
auth = "service_account"
api_base_url = "{sandbox_url}/api/1.0"
"#
    )
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
    for (path, field, value) in SANDBOX_APP_SECRETS {
        let written = Command::new(bao)
            .args(["kv", "put", "-mount=secret", path])
            .arg(format!("{field}={value}"))
            .env("VAULT_ADDR", url)
            .env("VAULT_TOKEN", token.expose())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(
            written.success(),
            "could not write the sandbox app secret secret/{path} into OpenBao"
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
    sandbox: SocketAddr,
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
    writeln_out(
        &mut out,
        &format!(
            "  {:<20} http://{}/webhooks/…  (agentauth events subscribe --tenant T --connection asana-pat --identifier U --resource GID)",
            "webhook intake",
            webhook_intake_address(addresses)
        ),
    )?;
    writeln_out(
        &mut out,
        &format!("  {:<20} http://{vault}", "openbao (dev)"),
    )?;
    writeln_out(
        &mut out,
        &format!(
            "  {:<20} http://{sandbox}/api/1.0  (seeded PAT: sandbox-pat-alice; control key in {})",
            "asana sandbox",
            data.join("keys/sandbox-control.key").display()
        ),
    )?;
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
             curl -H 'Authorization: Bearer sandbox-pat-alice' http://{sandbox}/api/1.0/users/me",
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
