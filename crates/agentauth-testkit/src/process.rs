//! A real agentauth binary under test: started with a config file, read through its stderr,
//! stopped with a real signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The path of a workspace binary built by `cargo build` (honours `CARGO_TARGET_DIR`).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A running service binary. Killed if dropped while still running.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `name` with `config` (TOML) written to a file, listening on a free port,
    /// with `env` added to its environment, in a fresh working folder (so relative paths, such
    /// as a default SQLite file, land there). Its stderr goes to [`ServiceProcess::log`].
    pub fn start(name: &str, config: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_on(name, config, env, crate::free_port())
    }

    /// Like [`ServiceProcess::start`], on a given address (to restart a service where its
    /// clients expect it).
    pub fn start_on(
        name: &str,
        config: &str,
        env: &[(&str, &str)],
        address: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::start_program(&binary(name), config, env, address)
    }

    /// Like [`ServiceProcess::start_on`], for any program that takes `--config FILE` and
    /// `--listen ADDR` (a benchmark re-running itself as a service, say).
    pub fn start_program(
        program: &Path,
        config: &str,
        env: &[(&str, &str)],
        address: SocketAddr,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.path().join("stderr.log"))?;
        let child = Command::new(program)
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(address.to_string())
            .current_dir(dir.path())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self {
            child,
            address,
            dir,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Where its gRPC API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://ADDRESS`, for a gRPC client.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Everything it has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    /// The folder its config and log live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills it with SIGKILL, as a node failure or the OOM killer would: it cleans nothing up.
    /// Its log stays readable.
    pub async fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.start_kill()?;
        Ok(self.child.wait().await?)
    }

    /// Sends SIGTERM and waits for it to exit, at most `within`.
    pub async fn terminate(mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("process already exited"))?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        Ok(tokio::time::timeout(within, self.child.wait()).await??)
    }
}

/// Runs `name` with `args` to completion, returning its exit status and stderr.
pub async fn run_to_exit(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(ExitStatus, String)> {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(binary(name))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output(),
    )
    .await??;
    Ok((
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}
