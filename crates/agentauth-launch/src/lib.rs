//! The `main` of every agentauth service binary, so each `main.rs` is one line.
//!
//! Order matters: flags, then configuration (a bad one exits 2 with one line on stderr before
//! any port is bound), then telemetry, then the listener, then the service until SIGTERM or
//! SIGINT, which drains and exits 0.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use agentauth_config::Override;
use agentauth_telemetry::LogFormat;
use clap::Parser;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A service binary: its names, its configuration, and how it runs.
pub trait Service: Sized + Send + 'static {
    /// The binary's name, e.g. `audit-log`.
    const NAME: &'static str;
    /// The prefix of its environment variables, e.g. `AUDIT_LOG` for `AUDIT_LOG__SERVER__LISTEN`.
    const ENV_PREFIX: &'static str;
    /// Log directives added to the default `info` level (ignored when `RUST_LOG` is set).
    const LOG_DIRECTIVES: &'static str = "";
    /// Its configuration; every struct in it denies unknown fields.
    type Config: DeserializeOwned + Send;

    /// Validates the configuration and prepares the service. Binds no port.
    fn new(config: Self::Config) -> anyhow::Result<Self>;

    /// Where the gRPC API should listen.
    fn listen(&self) -> SocketAddr;

    /// What each configured caller may do (`--print-access`).
    fn access(&self) -> Vec<agentauth_grpc::Access>;

    /// Serves on `listener` until `shutdown` is cancelled, then drains.
    fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// How the process behaves. What the service does belongs in its configuration.
#[derive(Debug, Parser)]
struct Flags {
    /// A TOML configuration file, layered over the defaults and under the environment.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Overrides `server.listen`, e.g. `127.0.0.1:0`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Log lines on stderr as `text` or `json`.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Validates the configuration, prints `ok`, and exits.
    #[arg(long)]
    check_config: bool,
    /// Validates the configuration, prints what each caller may do (its RPCs, tenants,
    /// connections and tools) as JSON on stdout, and exits.
    #[arg(long)]
    print_access: bool,
}

/// Runs the service `S` as a process and returns its exit code.
pub fn main<S: Service>() -> ExitCode {
    let flags = Flags::parse();
    let overrides: Vec<Override> = flags
        .listen
        .iter()
        .map(|addr| Override::new("server.listen", addr.clone()))
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{}: cannot start the async runtime: {error}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    // Preparing a service may create clients that need the runtime (connection pools); it
    // still binds nothing, so a bad configuration exits before any port is taken.
    let entered = runtime.enter();
    let service =
        agentauth_config::load::<S::Config>(S::ENV_PREFIX, flags.config.as_deref(), &overrides)
            .map_err(anyhow::Error::from)
            .and_then(S::new);
    drop(entered);
    let service = match service {
        Ok(service) => service,
        Err(error) => {
            eprintln!("{}: {error:#}", S::NAME);
            return ExitCode::from(2);
        }
    };
    if flags.print_access {
        return match serde_json::to_writer_pretty(std::io::stdout().lock(), &service.access()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("{}: cannot print the access list: {error}", S::NAME);
                ExitCode::FAILURE
            }
        };
    }
    if flags.check_config {
        eprintln!("{}: configuration ok", S::NAME);
        return ExitCode::SUCCESS;
    }
    runtime.block_on(serve(service, flags.log_format))
}

async fn serve<S: Service>(service: S, log_format: LogFormat) -> ExitCode {
    let telemetry = match agentauth_telemetry::init(S::NAME, log_format, S::LOG_DIRECTIVES) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{}: {error}", S::NAME);
            return ExitCode::from(2);
        }
    };
    let address = service.listen();
    let code = match TcpListener::bind(address).await {
        Err(error) => {
            tracing::error!(%address, %error, "cannot listen");
            ExitCode::FAILURE
        }
        Ok(listener) => {
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                agentauth_grpc::shutdown_signal().await;
                trigger.cancel();
            });
            match service.run(listener, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "service failed");
                    ExitCode::FAILURE
                }
            }
        }
    };
    telemetry.shutdown();
    code
}
