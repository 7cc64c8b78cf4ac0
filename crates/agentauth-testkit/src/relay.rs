//! A TCP relay in front of a real dependency (PostgreSQL, OpenBao, Redis, …) that a test cuts
//! and restores: a network partition between a service and what it depends on, with the
//! dependency itself untouched. And a [`Balancer`]: one address in front of several replicas,
//! as a Kubernetes Service is.

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

/// One address in front of several replicas of a service, as a Kubernetes Service spreads
/// connections over a Deployment's pods: each new connection goes to the next replica in turn,
/// and a replica that refuses it (killed, not yet restarted) is passed over for the one after.
/// A connection to a replica that dies ends with it; its client connects again, to a survivor.
#[derive(Debug)]
pub struct Balancer {
    address: SocketAddr,
    running: AbortHandle,
}

impl Balancer {
    /// A balancer on a free loopback port over `replicas`.
    pub async fn start(replicas: Vec<SocketAddr>) -> anyhow::Result<Self> {
        anyhow::ensure!(!replicas.is_empty(), "a balancer needs a replica");
        let listener = bind(crate::free_port()).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            for turn in 0.. {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                while connections.try_join_next().is_some() {}
                let replicas = replicas.clone();
                connections.spawn(async move {
                    for offset in 0..replicas.len() {
                        let replica = replicas[(turn + offset) % replicas.len()];
                        if let Ok(mut outbound) = TcpStream::connect(replica).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(Self {
            address,
            running: task.abort_handle(),
        })
    }

    /// Where clients connect instead of a replica.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.running.abort();
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A replica that answers every connection with its name.
    async fn replica(name: u8) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(&[name]).await;
            }
        });
        (address, task)
    }

    async fn answer(balancer: &Balancer) -> u8 {
        let mut stream = TcpStream::connect(balancer.address())
            .await
            .expect("connect");
        let mut name = [0u8];
        stream.read_exact(&mut name).await.expect("an answer");
        name[0]
    }

    #[tokio::test]
    async fn a_balancer_takes_replicas_in_turn_and_passes_over_a_dead_one() {
        let (first, _first_task) = replica(1).await;
        let (second, second_task) = replica(2).await;
        let balancer = Balancer::start(vec![first, second]).await.expect("start");
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(answer(&balancer).await);
        }
        assert_eq!(answers, [1, 2, 1, 2]);
        second_task.abort();
        let _ = second_task.await;
        for _ in 0..3 {
            assert_eq!(
                answer(&balancer).await,
                1,
                "the survivor takes every connection"
            );
        }
    }
}
