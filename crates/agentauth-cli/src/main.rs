//! `agentauth`: the operator CLI.

mod accounts;
mod audit;
mod dev;
mod drift;
mod events;
mod keys;
mod mcp;
mod status;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use agentauth_grpc::ApiKey;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "agentauth",
    version,
    about = "Operate agentauth: keys, the local system, and its services"
)]
struct Cli {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(subcommand)]
    command: Command,
}

/// Where the services are and how to authenticate to them.
#[derive(Debug, clap::Args)]
struct Endpoints {
    /// The API key to call the services with.
    #[arg(long, env = "AGENTAUTH_API_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    /// A file holding the API key (after `make run`: `.data/keys/operator.key`).
    #[arg(
        long,
        env = "AGENTAUTH_API_KEY_FILE",
        global = true,
        conflicts_with = "key"
    )]
    key_file: Option<PathBuf>,
    /// token-vault's gRPC address.
    #[arg(
        long,
        env = "AGENTAUTH_TOKEN_VAULT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    token_vault: String,
    /// connector-executor's gRPC address.
    #[arg(
        long,
        env = "AGENTAUTH_CONNECTOR_EXECUTOR",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    connector_executor: String,
    /// audit-log's gRPC address.
    #[arg(
        long,
        env = "AGENTAUTH_AUDIT_LOG",
        default_value = "http://127.0.0.1:50053",
        global = true
    )]
    audit_log: String,
    /// schema-watcher's gRPC address.
    #[arg(
        long,
        env = "AGENTAUTH_SCHEMA_WATCHER",
        default_value = "http://127.0.0.1:50054",
        global = true
    )]
    schema_watcher: String,
}

impl Endpoints {
    /// The API key from `--key` or `--key-file`; every RPC but health needs one.
    fn api_key(&self) -> anyhow::Result<ApiKey> {
        match (&self.key, &self.key_file) {
            (Some(key), _) => Ok(ApiKey::new(key)),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| ApiKey::new(&text))
                .map_err(|e| anyhow::anyhow!("cannot read key file {}: {e}", path.display())),
            (None, None) => anyhow::bail!(
                "an API key is needed: pass --key-file FILE (or --key, or set AGENTAUTH_API_KEY)"
            ),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// End users' Asana accounts: connect, status, list, disconnect.
    #[command(subcommand)]
    Accounts(accounts::Command),
    /// The audit log: query, export, verify, purge.
    #[command(subcommand)]
    Audit(audit::Command),
    /// API keys for callers, and tenants' encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// schema-watcher's drift of MCP tool lists: list, show, approve.
    #[command(subcommand)]
    Drift(drift::Command),
    /// Runs the whole system on this machine: OpenBao (dev), SQLite, the four services.
    Dev(dev::Args),
    /// Shows whether each service reports SERVING.
    Status,
    /// connector-executor's tools: list.
    #[command(subcommand)]
    Tools(tools::Command),
    /// Runs one tool as an end user and prints its output.
    Exec(tools::Exec),
    /// Virtual MCP servers: mint a per-user session.
    #[command(subcommand)]
    Mcp(mcp::Command),
    /// Asana webhooks as event subscriptions, and the stream of their events.
    #[command(subcommand)]
    Events(events::Command),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Prints a new API key and the `[[server.callers]]` entry that admits it, granting only
    /// what the flags name.
    Generate {
        /// The caller's name, as it will appear in logs and audit rows.
        #[arg(long)]
        name: String,
        /// A tenant it acts for (repeat for several).
        #[arg(long = "tenant", required = true)]
        tenants: Vec<String>,
        /// A role of the service that admits it (repeat for several), e.g. `executor`; the
        /// README lists each service's roles.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A connection it may use (repeat for several); none when not given.
        #[arg(long = "connection")]
        connections: Vec<String>,
        /// A tool it may run (repeat for several); none when not given.
        #[arg(long = "tool")]
        tools: Vec<String>,
    },
    /// Rotates a tenant's encryption key in token-vault while calls keep working: every stored
    /// credential is re-wrapped under the new key version, then older versions no longer
    /// decrypt (operators only; audited).
    RotateTenant {
        #[arg(long)]
        tenant: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("agentauth: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("agentauth: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keys(KeysCommand::Generate {
            name,
            tenants,
            roles,
            connections,
            tools,
        }) => {
            let key = ApiKey::generate();
            let mut out = std::io::stdout().lock();
            writeln_out(
                &mut out,
                &format!("API key (give it to `{name}`; it is not stored anywhere):"),
            )?;
            writeln_out(&mut out, &format!("  {}", key.expose()))?;
            writeln_out(
                &mut out,
                "\nAdmit it in the configuration of the service it calls (it may do only this):",
            )?;
            let list = |names: &[String]| {
                let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
                format!("[{}]", quoted.join(", "))
            };
            writeln_out(
                &mut out,
                &format!(
                    "  [[server.callers]]\n  name = {name:?}\n  key_sha256 = \"{}\"\n  tenants = {}\n  roles = {}\n  connections = {}\n  tools = {}",
                    key.hash(),
                    list(&tenants),
                    list(&roles),
                    list(&connections),
                    list(&tools),
                ),
            )?;
            writeln_out(
                &mut out,
                "\nTo widen it, add names to a list (`\"*\"` means any tenant, connection or tool),\n\
                 add roles, or name single RPCs in `rpcs = [\"DisconnectAccount\"]`.\n\
                 To rotate an existing caller's key instead, set this key_sha256 in its entry and\n\
                 its old one as previous_key_sha256: both are admitted until you remove that.\n\
                 Under `make run`, put the entry in .data/callers/<service>.toml with the header\n\
                 [[callers]] instead, and restart.",
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::RotateTenant { tenant }) => {
            keys::rotate_tenant(tenant, &cli.endpoints).await
        }
        Command::Dev(args) => dev::run(args).await,
        Command::Status => status::run(&cli.endpoints).await,
        Command::Audit(command) => audit::run(command, &cli.endpoints).await,
        Command::Drift(command) => drift::run(command, &cli.endpoints).await,
        Command::Accounts(command) => accounts::run(command, &cli.endpoints).await,
        Command::Tools(command) => tools::list(command, &cli.endpoints).await,
        Command::Exec(args) => tools::exec(args, &cli.endpoints).await,
        Command::Mcp(command) => mcp::run(command, &cli.endpoints).await,
        Command::Events(command) => events::run(command, &cli.endpoints).await,
    }
}

/// Writes one line of the command's output (stdout is the command's result; logs go to stderr).
fn writeln_out(out: &mut impl std::io::Write, line: &str) -> anyhow::Result<()> {
    writeln!(out, "{line}")?;
    Ok(())
}
