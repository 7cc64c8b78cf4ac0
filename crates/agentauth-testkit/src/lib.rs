//! Test infrastructure shared by every agentauth test level.
//!
//! - [`openbao`]: one OpenBao dev server per test process (shared by its tests), and a fresh
//!   path prefix per test.
//! - [`bench`]: percentiles and a process's CPU time, for the benchmarks.
//! - [`connections`]: token-vault's `[[connections]]` entries, written in one place.
//! - [`database`]: a fresh PostgreSQL database or SQLite file per test.
//! - [`free_port`], [`wait_serving`], [`eventually`] and [`assert_eventually!`]: no sleeps,
//!   only deadlines.
//! - [`logs`]: every log line of the test process, to scan for secrets.
//! - [`process`]: a real binary, started with a config, stopped with a signal.
//! - [`redis`]: the machine's Redis under a fresh key prefix, or a private one to take away.
//! - [`relay`]: a TCP relay in front of a real dependency, cut and restored (a partition), and
//!   a balancer in front of a service's replicas.
//! - [`prism`]: Stoplight Prism checking traffic against Asana's OpenAPI spec.

pub mod bench;
pub mod connections;
pub mod database;
pub mod logs;
pub mod openbao;
pub mod prism;
pub mod process;
pub mod redis;
pub mod relay;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Polls an async condition until it holds or the deadline passes, then panics with the message.
///
/// `assert_eventually!(Duration::from_secs(5), async { check().await }, "what was expected")`
#[macro_export]
macro_rules! assert_eventually {
    ($within:expr, $condition:expr, $($message:tt)+) => {{
        let deadline = ::std::time::Instant::now() + $within;
        loop {
            if $condition.await {
                break;
            }
            if ::std::time::Instant::now() >= deadline {
                panic!("not true within {:?}: {}", $within, format!($($message)+));
            }
            ::tokio::time::sleep(::std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// Polls `probe` until it returns `Some`, and returns that; `None` once `within` has passed.
/// [`assert_eventually!`] for a condition that yields what the test goes on with.
pub async fn eventually<T, F>(within: Duration, mut probe: impl FnMut() -> F) -> Option<T>
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback address with a port that was free a moment ago, for binaries that bind it
/// themselves. In-process tests should pass a bound listener instead.
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Waits until the gRPC health service at `address` reports `service` ("" for the whole
/// server) SERVING, or fails after `within`.
pub async fn wait_serving(
    address: SocketAddr,
    service: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut last = String::from("never answered");
    while Instant::now() < deadline {
        match health_status(address, service).await {
            Ok(ServingStatus::Serving) => return Ok(()),
            Ok(status) => last = format!("{status:?}"),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("{address} did not report {service:?} SERVING within {within:?}: {last}")
}

/// The health status the server at `address` reports for `service`.
pub async fn health_status(address: SocketAddr, service: &str) -> anyhow::Result<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(match response.into_inner().status {
        1 => ServingStatus::Serving,
        2 => ServingStatus::NotServing,
        _ => ServingStatus::Unknown,
    })
}

/// The workspace root (where `Cargo.lock` is), from a test binary's location.
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() {
        if !dir.pop() {
            panic!("no Cargo.lock above {}", env!("CARGO_MANIFEST_DIR"));
        }
    }
    dir
}

/// Runs the Python script `script` (relative to the workspace root) with the project venv's
/// Python and `args`, and returns the JSON object it printed last.
pub async fn python_json(script: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let python = tools_dir().join("venv/bin/python");
    anyhow::ensure!(
        python.exists(),
        "no Python venv at {}: run `make test` (it installs tests/python/requirements.txt)",
        python.display()
    );
    let mut command = tokio::process::Command::new(&python);
    command.arg(workspace_root().join(script)).args(args);
    peer_json("Python", command).await
}

/// Runs the Node script `script` (relative to the workspace root) with `args` and
/// `NODE_TOOLS_DIR` naming `.tools/node` (where `make tools` installs tests/node/package.json),
/// and returns the JSON object it printed last.
pub async fn node_json(script: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let modules = tools_dir().join("node");
    anyhow::ensure!(
        modules.join("node_modules").is_dir(),
        "no Node modules at {}: run `make test` (it installs tests/node/package.json)",
        modules.display()
    );
    let mut command = tokio::process::Command::new("node");
    command
        .arg(workspace_root().join(script))
        .args(args)
        .env("NODE_TOOLS_DIR", modules);
    peer_json("Node", command).await
}

/// Runs an independent peer's `command` for at most 120 s and parses the last line it
/// printed as JSON.
async fn peer_json(
    peer: &str,
    mut command: tokio::process::Command,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::{Context as _, ensure};
    let run = command.kill_on_drop(true).output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .with_context(|| format!("the {peer} peer did not finish within 120 s"))??;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "the {peer} peer failed ({}); stderr:\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8(output.stdout)?;
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .with_context(|| format!("unexpected output {stdout:?}; stderr:\n{stderr}"))
}

/// The project-local tools folder that `make test` fills (`.tools/`, or `$AGENTAUTH_TOOLS_DIR`).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("AGENTAUTH_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools"))
}
