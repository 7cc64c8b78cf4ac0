//! Audit events of credential grants, revocations and tenant deletions.
//!
//! The `[audit]` section is an [`EmitterConfig`] plus `enabled`. Without the section, auditing
//! is off (tests and local experiments); with it, it is on unless it says `enabled = false`.
//! Either way the service says so once at start. While auditing is on and the emitter cannot
//! take events, changes are refused (UNAVAILABLE) rather than made unaudited.

use agentauth_audit::{Emitter, EmitterConfig, Event, StartError};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Error;

/// The `[audit]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct Config {
    /// Whether events are sent to audit-log.
    pub enabled: bool,
    /// Where and how: the emitter's own settings, in the same section.
    pub emitter: EmitterConfig,
}

impl TryFrom<Map<String, Value>> for Config {
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
pub enum Audit {
    Disabled,
    Enabled(Emitter),
}

impl Audit {
    /// Starts the emitter when auditing is enabled (inside a Tokio runtime).
    pub fn start(config: Config) -> Result<Self, StartError> {
        if config.enabled {
            Emitter::start(config.emitter).map(Self::Enabled)
        } else {
            Ok(Self::Disabled)
        }
    }

    /// Logs once whether and where events go.
    pub fn log_mode(&self, url: &str) {
        match self {
            Self::Disabled => tracing::warn!(
                "audit disabled: no [audit] section or audit.enabled = false; credential changes are not audited"
            ),
            Self::Enabled(_) => tracing::info!(url, "audit events go to audit-log"),
        }
    }

    /// Refuses a change that could not be audited.
    pub fn ready(&self) -> Result<(), Error> {
        match self {
            Self::Enabled(emitter) if !emitter.is_healthy() => Err(Error::Unavailable {
                dependency: "audit",
                reason: "the audit emitter takes no events".to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Records `event`. The change it describes is already made, so a refusal is logged loudly
    /// rather than returned.
    pub fn record(&self, event: Event) {
        if let Self::Enabled(emitter) = self
            && let Err(error) = emitter.emit(event)
        {
            tracing::error!(%error, "an audit event was not accepted");
        }
    }

    /// Flushes what is queued within `grace`.
    pub async fn shutdown(&self, grace: std::time::Duration) {
        if let Self::Enabled(emitter) = self {
            emitter.shutdown(grace).await;
        }
    }
}

#[cfg(test)]
mod tests {
    fn parse(text: &str) -> Result<crate::Config, String> {
        use figment::providers::Format as _;
        figment::Figment::from(figment::providers::Toml::string(text))
            .extract()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn audit_is_off_without_the_section_and_on_with_it_unless_disabled() {
        assert!(!parse("").expect("empty").audit.enabled);
        let on = parse("[audit]\nurl = \"http://127.0.0.1:9\"\nflush_interval = \"50ms\"\n")
            .expect("on");
        assert!(on.audit.enabled);
        assert_eq!(on.audit.emitter.url, "http://127.0.0.1:9");
        assert_eq!(
            on.audit.emitter.flush_interval,
            std::time::Duration::from_millis(50)
        );
        let off = parse("[audit]\nenabled = false\n").expect("off");
        assert!(!off.audit.enabled);
        let typo = parse("[audit]\nurll = \"x\"\n").expect_err("unknown field");
        assert!(typo.contains("urll"), "{typo}");
    }
}
