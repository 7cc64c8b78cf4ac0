//! `agentauth`: the operator CLI.

mod dev;
mod status;

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

/// Where the services are.
#[derive(Debug, clap::Args)]
struct Endpoints {
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

#[derive(Debug, Subcommand)]
enum Command {
    /// API keys for callers.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Runs the whole system on this machine: OpenBao (dev), SQLite, the four services.
    Dev(dev::Args),
    /// Shows whether each service reports SERVING.
    Status,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Prints a new API key and the `[[server.callers]]` entry that admits it.
    Generate {
        /// The caller's name, as it will appear in logs and audit rows.
        #[arg(long)]
        name: String,
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
        Command::Keys(KeysCommand::Generate { name }) => {
            let key = ApiKey::generate();
            let mut out = std::io::stdout().lock();
            writeln_out(
                &mut out,
                &format!("API key (give it to `{name}`; it is not stored anywhere):"),
            )?;
            writeln_out(&mut out, &format!("  {}", key.expose()))?;
            writeln_out(&mut out, "\nAdmit it in a service's configuration:")?;
            writeln_out(
                &mut out,
                &format!(
                    "  [[server.callers]]\n  name = \"{name}\"\n  key_sha256 = \"{}\"\n  tenants = [\"*\"]\n  connections = [\"*\"]\n  tools = [\"*\"]",
                    key.hash()
                ),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev(args) => dev::run(args).await,
        Command::Status => status::run(&cli.endpoints).await,
    }
}

/// Writes one line of the command's output (stdout is the command's result; logs go to stderr).
fn writeln_out(out: &mut impl std::io::Write, line: &str) -> anyhow::Result<()> {
    writeln!(out, "{line}")?;
    Ok(())
}
