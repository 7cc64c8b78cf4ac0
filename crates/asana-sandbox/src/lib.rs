//! A local, stateful Asana for tests and offline agent development: the REST API under
//! `/api/1.0`, OAuth under `/-/`, webhooks, and the MCP V2 server at `/v2/mcp`, with Asana's
//! error shapes, limits and failure modes. The control API under `/_sandbox/` (off unless a
//! control key is configured) seeds data and injects faults.
//!
//! Everything is in memory. Objects are kept as the JSON Asana would return in full
//! ([`world`]); credentials in [`tokens`]; limits in [`limits`].

mod base64;
pub mod control;
pub mod error;
pub mod events;
pub mod limits;
pub mod mcp;
pub mod oauth;
pub mod rest;
pub mod seed;
pub mod spec;
pub mod tokens;
pub mod webhooks;
pub mod world;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use limits::{LimitConfig, Limits};
pub use tokens::{App, AppKind, Principal, Surface, Tokens};
pub use world::World;

/// How the sandbox behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The address clients use to reach it, for `next_page.uri`, OAuth and MCP metadata.
    pub public_url: String,
    /// Enables `/_sandbox/` when set; requests must send it as `X-Sandbox-Control-Key`.
    pub control_key: Option<String>,
    /// How long an OAuth access token lives.
    #[serde(with = "humantime_serde_compat")]
    pub token_lifetime: Duration,
    /// Approve OAuth consent without showing the page (for tests that do not drive a browser).
    pub auto_approve: bool,
    /// Load the default seed (workspaces, users, projects, tasks, apps).
    pub seed: bool,
    /// `tools/list` page size on the MCP server.
    pub mcp_page_size: usize,
    /// How often webhooks get an empty heartbeat delivery.
    #[serde(with = "humantime_serde_compat")]
    pub webhook_heartbeat: Duration,
    /// How long a webhook may keep failing before it is deleted.
    #[serde(with = "humantime_serde_compat")]
    pub webhook_failure_window: Duration,
    /// How long `offset` tokens stay valid.
    #[serde(with = "humantime_serde_compat")]
    pub offset_lifetime: Duration,
    pub limits: LimitConfig,
}

/// `humantime` durations ("3600s", "8h") for serde, without another dependency.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8787".to_owned(),
            control_key: None,
            token_lifetime: Duration::from_secs(3600),
            auto_approve: false,
            seed: true,
            mcp_page_size: 50,
            webhook_heartbeat: Duration::from_secs(8 * 3600),
            webhook_failure_window: Duration::from_secs(24 * 3600),
            offset_lifetime: Duration::from_secs(3600),
            limits: LimitConfig::default(),
        }
    }
}

/// An injected failure for requests whose path starts with `path_prefix`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub path_prefix: String,
    /// Added latency in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Answer this status instead (500-599 or 429).
    #[serde(default)]
    pub status: Option<u16>,
    /// Apply to this many requests, then disappear (forever when absent).
    #[serde(default)]
    pub times: Option<u32>,
}

/// The shared state behind every route.
#[derive(Debug)]
pub struct Inner {
    pub config: Config,
    pub world: Mutex<World>,
    pub tokens: Mutex<Tokens>,
    pub limits: Limits,
    pub faults: Mutex<Vec<Fault>>,
    /// Wakes webhook delivery and MCP listeners when the world changes.
    pub changed: tokio::sync::broadcast::Sender<u64>,
    pub shutdown: CancellationToken,
}

/// A running sandbox's state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sandbox(pub Arc<Inner>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sandbox {
    /// A sandbox with `config`, seeded when `config.seed` is set.
    pub fn new(config: Config) -> Self {
        let (changed, _) = tokio::sync::broadcast::channel(1024);
        let sandbox = Self(Arc::new(Inner {
            tokens: Mutex::new(Tokens::new(config.token_lifetime)),
            limits: Limits::new(config.limits.clone()),
            world: Mutex::new(World::default()),
            faults: Mutex::new(Vec::new()),
            changed,
            shutdown: CancellationToken::new(),
            config,
        }));
        if sandbox.0.config.seed {
            seed::default_seed(&sandbox);
        }
        sandbox
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.0.world)
    }

    pub fn tokens(&self) -> MutexGuard<'_, Tokens> {
        lock(&self.0.tokens)
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Tells listeners (webhooks, MCP, events) that the change log grew.
    pub fn notify_changed(&self) {
        let last = self.world().last_seq();
        let _ = self.0.changed.send(last);
    }

    /// The first injected fault matching `path`, consuming one use of it.
    pub fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = lock(&self.0.faults);
        let index = faults
            .iter()
            .position(|f| path.starts_with(&f.path_prefix))?;
        let fault = faults[index].clone();
        if let Some(times) = &mut faults[index].times {
            *times -= 1;
            if *times == 0 {
                faults.remove(index);
            }
        }
        Some(fault)
    }

    /// Plays the first injected fault matching `path`, if any: waits its latency, then answers
    /// its status (429 as Asana's rate limit, anything else as a server error) or, without one,
    /// lets the request go on (`None`).
    pub async fn apply_fault(&self, path: &str) -> Option<Response> {
        let fault = self.take_fault(path)?;
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        match fault.status? {
            429 => Some(ApiError::rate_limited(30).into_response()),
            status => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                Some(ApiError::new(status, "Server Error").into_response())
            }
        }
    }

    /// Every route of the sandbox.
    pub fn router(&self) -> Router {
        Router::new()
            .merge(rest::routes(self.clone()))
            .merge(oauth::routes(self.clone()))
            .merge(mcp::routes(self.clone()))
            .merge(control::routes(self.clone()))
            .merge(webhooks::routes(self.clone()))
            .merge(events::routes(self.clone()))
    }

    /// Serves on `listener` until `shutdown` is cancelled; starts webhook delivery.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        webhooks::start_delivery(self.clone());
        let stop = self.0.shutdown.clone();
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                stop.cancel();
            })
            .await
    }
}
