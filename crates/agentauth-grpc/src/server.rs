//! Serving one agentauth service: routes, health, reflection, tracing and shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{Access, CallerConfig, Callers};
use crate::authorize::AuthorizeLayer;
use crate::policy::Policy;

/// The `[server]` section every service's configuration has.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the gRPC API listens.
    pub listen: SocketAddr,
    /// How long in-flight RPCs may take to finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often dependencies are checked for readiness.
    #[serde(with = "humantime_serde")]
    pub readiness_interval: Duration,
    /// The callers this service accepts, each with the roles and RPCs it may call.
    pub callers: Vec<CallerConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            shutdown_grace: Duration::from_secs(20),
            readiness_interval: Duration::from_secs(5),
            callers: Vec::new(),
        }
    }
}

/// The health service name Kubernetes liveness probes ask for.
pub const LIVENESS: &str = "liveness";

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid server configuration: {0}")]
    Config(String),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Whether the service's dependencies answer. Checked before the service reports SERVING
/// and then periodically; liveness never depends on it.
pub trait Readiness: Send + Sync + 'static {
    /// `Err` names the dependency that does not answer.
    fn check(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// For services whose only dependency is their own listener.
#[derive(Debug, Clone, Copy)]
pub struct AlwaysReady;

impl Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What a service serves besides health and reflection.
#[derive(Debug)]
pub struct Api {
    /// The service's gRPC servers: those of the policies given to [`Server::new`].
    pub routes: Routes,
    /// The encoded file descriptor set that describes them, for reflection and for checking
    /// the policies against the contracts.
    pub descriptors: &'static [u8],
}

/// A service about to be served: its name, its configuration, its policies and its callers.
#[derive(Debug)]
pub struct Server {
    service: &'static str,
    config: ServerConfig,
    policies: &'static [&'static Policy],
    callers: Callers,
}

impl Server {
    /// Validates `config` for the binary `service` (e.g. `audit-log`) serving the gRPC
    /// services of `policies`, whose roles and RPCs the callers may name.
    pub fn new(
        service: &'static str,
        config: ServerConfig,
        policies: &'static [&'static Policy],
    ) -> Result<Self, Error> {
        let callers = Callers::new(&config.callers, policies).map_err(Error::Config)?;
        Ok(Self {
            service,
            config,
            policies,
            callers,
        })
    }

    /// The callers this server admits (shared, not copied).
    pub fn callers(&self) -> Callers {
        self.callers.clone()
    }

    /// What each configured caller may do.
    pub fn access(&self) -> Vec<Access> {
        self.callers.access()
    }

    /// Serves `api` on `listener`, with health and reflection beside it, until `shutdown` is
    /// cancelled. Health reports NOT_SERVING until `readiness` first passes.
    ///
    /// Shutdown: health goes NOT_SERVING, the listener closes, in-flight RPCs get
    /// `shutdown_grace` to finish, then the call returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        api: Api,
        readiness: impl Readiness,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let mut known = std::collections::HashSet::new();
        for policy in self.policies {
            policy.check(api.descriptors).map_err(Error::Config)?;
            known.extend(policy.rpcs.iter().map(|rpc| policy.path(rpc)));
        }
        let (reporter, health) = tonic_health::server::health_reporter();
        let names: Vec<&'static str> = std::iter::once("")
            .chain(self.policies.iter().map(|p| p.service))
            .collect();
        set_status(&reporter, &names, ServingStatus::NotServing).await;
        // Liveness never depends on a dependency: it answers SERVING while the process serves.
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(api.descriptors)
            .build_v1()?;
        let routes = api.routes.add_service(health).add_service(reflection);

        let address = listener.local_addr().ok();
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .trace_fn(crate::trace::server_span)
            .layer(AuthorizeLayer::new(self.callers.clone(), known))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming(listener), stop.clone().cancelled_owned());
        tokio::pin!(server);
        tracing::info!(service = self.service, address = ?address, "listening");

        let watcher = tokio::spawn(watch_readiness(
            readiness,
            reporter.clone(),
            names.clone(),
            self.config.readiness_interval,
            shutdown.clone(),
        ));

        tokio::select! {
            result = &mut server => {
                watcher.abort();
                return result.map_err(Error::from);
            }
            () = shutdown.cancelled() => {}
        }

        tracing::info!(service = self.service, "shutting down");
        watcher.abort();
        set_status(&reporter, &names, ServingStatus::NotServing).await;
        stop.cancel();
        match tokio::time::timeout(self.config.shutdown_grace, &mut server).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                service = self.service,
                grace = ?self.config.shutdown_grace,
                "in-flight requests did not finish within the grace period"
            ),
        }
        tracing::info!(service = self.service, "stopped");
        Ok(())
    }
}

/// Accepted connections with Nagle's algorithm off: tonic leaves sockets from a caller-given
/// listener as they are, and a response written in several pieces would otherwise wait for
/// the peer's delayed ACK (about 40 ms) before its tail is sent.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

async fn set_status(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

/// How many consecutive results must disagree with the current status before it flips, so one
/// slow answer does not take a replica out of its load balancer.
const FLIP_AFTER: u32 = 2;

/// How often readiness is retried while not serving, so start-up and recovery are prompt.
const RETRY_WHILE_NOT_SERVING: Duration = Duration::from_millis(200);

async fn watch_readiness(
    readiness: impl Readiness,
    reporter: HealthReporter,
    names: Vec<&'static str>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut serving = false;
    let mut started = false;
    let mut streak = 0;
    loop {
        let result = readiness.check().await;
        let ready = result.is_ok();
        streak = if ready == serving { 0 } else { streak + 1 };
        // The first success flips at once: nothing was being served yet.
        if streak >= FLIP_AFTER || (ready && !started) {
            started = true;
            serving = ready;
            streak = 0;
            match &result {
                Ok(()) => tracing::info!("dependencies ready; serving"),
                Err(reason) => tracing::warn!(%reason, "dependency not ready; not serving"),
            }
            let status = if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set_status(&reporter, &names, status).await;
        } else if let Err(reason) = &result {
            tracing::debug!(%reason, "readiness check failed");
        }
        let pause = if serving {
            interval
        } else {
            RETRY_WHILE_NOT_SERVING
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the service");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
