//! Redis for tests: the machine's own (127.0.0.1:6379, or `AGENTAUTH_TEST_REDIS_URL`) under a
//! fresh key prefix per test, or a private `redis-server` that a test stops and starts again to
//! see an outage.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The URL of the Redis every test shares.
pub fn shared_url() -> String {
    std::env::var("AGENTAUTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
pub fn fresh_prefix() -> String {
    format!("agentauth-test:{}", uuid::Uuid::new_v4().simple())
}

/// A private `redis-server` on a loopback port, keeping nothing on disk. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    address: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub async fn start() -> anyhow::Result<Self> {
        let mut server = Self {
            child: None,
            address: crate::free_port(),
            dir: tempfile::tempdir()?,
        };
        server.start_again().await?;
        Ok(server)
    }

    /// `redis://` URL of the server.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address)
    }

    /// Kills the server (SIGKILL): its clients see their connections drop and connects refused.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port, empty.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "redis-server is running");
        let port = self.address.port().to_string();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("redis-server (Debian's redis-server package): {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if ping(self.address).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::bail!("redis-server on {} did not answer PING", self.address)
    }
}

async fn ping(address: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return false;
    };
    if stream.write_all(b"PING\r\n").await.is_err() {
        return false;
    }
    let mut answer = [0u8; 7];
    stream.read_exact(&mut answer).await.is_ok() && &answer == b"+PONG\r\n"
}
