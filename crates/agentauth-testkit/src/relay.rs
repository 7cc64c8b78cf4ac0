//! A TCP relay in front of a real dependency (PostgreSQL, OpenBao, Redis, …) that a test cuts
//! and restores: a network partition between a service and what it depends on, with the
//! dependency itself untouched.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

/// Forwards every connection to its address on to `target` until [`Relay::cut`].
#[derive(Debug)]
pub struct Relay {
    address: SocketAddr,
    target: SocketAddr,
    running: Mutex<Option<AbortHandle>>,
}

impl Relay {
    /// A relay on a free loopback port to `target`, forwarding.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = bind(crate::free_port()).await?;
        let relay = Self {
            address: listener.local_addr()?,
            target,
            running: Mutex::new(None),
        };
        relay.serve(listener);
        Ok(relay)
    }

    /// Where clients connect instead of the target.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Resets every relayed connection and refuses new ones.
    pub fn cut(&self) {
        if let Some(running) = self.lock().take() {
            running.abort();
        }
    }

    /// Forwards again, on the same address.
    pub async fn restore(&self) -> anyhow::Result<()> {
        let listener = bind(self.address).await?;
        self.serve(listener);
        Ok(())
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let task = tokio::spawn(async move {
            // Dropped with this task when the relay is cut, ending every connection.
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.lock() = Some(task.abort_handle());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<AbortHandle>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Binds `address` (with SO_REUSEADDR), retrying briefly while a cut listener is still closing.
async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        match socket.bind(address).and_then(|()| socket.listen(128)) {
            Ok(listener) => return Ok(listener),
            Err(error) if Instant::now() >= deadline => {
                anyhow::bail!("relay cannot bind {address}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}
