//! A service's `[audit]` section and the sink it configures: an [`Emitter`] to audit-log, or
//! nothing.
//!
//! The section is an [`EmitterConfig`] plus `enabled`. Without the section, auditing is off
//! (tests and local experiments); with it, it is on unless it says `enabled = false`. Either way
//! the service says so once at start ([`Sink::log_mode`]). While auditing is on and the emitter
//! cannot take events ([`Sink::is_healthy`]), services refuse work rather than do it unaudited.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Emitter, EmitterConfig, Event, StartError};

/// The `[audit]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct SinkConfig {
    /// Whether events are sent to audit-log.
    pub enabled: bool,
    /// Where and how: the emitter's own settings, in the same section.
    pub emitter: EmitterConfig,
}

impl TryFrom<Map<String, Value>> for SinkConfig {
    type Error = String;

    fn try_from(mut section: Map<String, Value>) -> Result<Self, String> {
        let enabled = match section.remove("enabled") {
            None => true,
            Some(Value::Bool(enabled)) => enabled,
            Some(_) => return Err("audit.enabled must be true or false".to_owned()),
        };
        let emitter =
            serde_json::from_value(Value::Object(section)).map_err(|e| format!("audit: {e}"))?;
        Ok(Self { enabled, emitter })
    }
}

/// Where audit events go.
#[derive(Debug)]
pub enum Sink {
    Disabled,
    Enabled(Emitter),
}

impl Sink {
    /// Starts the emitter when auditing is enabled (inside a Tokio runtime).
    pub fn start(config: SinkConfig) -> Result<Self, StartError> {
        if config.enabled {
            Emitter::start(config.emitter).map(Self::Enabled)
        } else {
            Ok(Self::Disabled)
        }
    }

    /// Logs once whether events go to `url`; `unaudited` says what goes unrecorded when off.
    pub fn log_mode(&self, url: &str, unaudited: &str) {
        match self {
            Self::Disabled => tracing::warn!(
                "audit disabled: no [audit] section or audit.enabled = false; {unaudited} are not audited"
            ),
            Self::Enabled(_) => tracing::info!(url, "audit events go to audit-log"),
        }
    }

    /// Whether events are recorded at all: when not, callers skip building them.
    pub fn is_enabled(&self) -> bool {
        matches!(self, Self::Enabled(_))
    }

    /// False while auditing is on and the emitter takes no events.
    pub fn is_healthy(&self) -> bool {
        match self {
            Self::Disabled => true,
            Self::Enabled(emitter) => emitter.is_healthy(),
        }
    }

    /// False while auditing is on and the emitter does not keep up (see
    /// [`Emitter::keeps_up`]): the service is then not ready.
    pub fn keeps_up(&self) -> bool {
        match self {
            Self::Disabled => true,
            Self::Enabled(emitter) => emitter.keeps_up(),
        }
    }

    /// Records `event`, waiting for room in the emitter's queue rather than dropping it. What
    /// it describes already happened, so a failure (the emitter is shut down, the event is
    /// malformed) is logged loudly rather than returned.
    pub async fn record(&self, event: Event) {
        if let Self::Enabled(emitter) = self
            && let Err(error) = emitter.record(event).await
        {
            tracing::error!(%error, "an audit event was not recorded");
        }
    }

    /// Flushes what is queued within `grace`.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        if let Self::Enabled(emitter) = self {
            emitter.shutdown(grace).await;
        }
    }
}
