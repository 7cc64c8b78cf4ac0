//! `asana-sandbox --listen HOST:PORT`: a local Asana on one address.

use std::net::SocketAddr;
use std::process::ExitCode;

use asana_sandbox::{Config, Sandbox};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// A faster allocator than the system's for a service that allocates per request (the same in
/// every binary, so that benchmarks of one process compare like with like).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "asana-sandbox",
    version,
    about = "A local, stateful Asana: REST, OAuth, webhooks, MCP V2"
)]
struct Args {
    /// Where to serve everything.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// The URL clients reach it by (default: http://LISTEN).
    #[arg(long)]
    public_url: Option<String>,
    /// Enables the control API under /_sandbox/ for callers sending this key.
    #[arg(long, env = "ASANA_SANDBOX_CONTROL_KEY", hide_env_values = true)]
    control_key: Option<String>,
    /// Approve OAuth consent without showing the page.
    #[arg(long)]
    auto_approve: bool,
    /// Start empty instead of with the default seed.
    #[arg(long)]
    no_seed: bool,
    /// How long OAuth access tokens live.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    token_lifetime: std::time::Duration,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config {
        public_url: args
            .public_url
            .unwrap_or_else(|| format!("http://{}", args.listen)),
        control_key: args.control_key,
        auto_approve: args.auto_approve,
        seed: !args.no_seed,
        token_lifetime: args.token_lifetime,
        ..Config::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("asana-sandbox: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("asana-sandbox: cannot listen on {}: {error}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            trigger.cancel();
        });
        tracing::info!(address = %args.listen, "asana sandbox listening");
        match Sandbox::new(config).serve(listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("asana-sandbox: {error}");
                ExitCode::FAILURE
            }
        }
    })
}
