//! Audit events of credential grants, revocations and tenant deletions, through the shared
//! [`Sink`](agentauth_audit::Sink): the `[audit]` section configures it. While auditing is on and
//! the emitter cannot take events, changes are refused (UNAVAILABLE) rather than made unaudited.

pub use agentauth_audit::{Sink as Audit, SinkConfig as Config};

use crate::Error;

/// The actor of every event token-vault records; the caller that caused one, if any, is the
/// actor's identifier.
pub const SERVICE: &str = "token-vault";

/// Refuses a change that could not be audited.
pub fn ready(audit: &Audit) -> Result<(), Error> {
    if audit.is_healthy() {
        Ok(())
    } else {
        Err(Error::Unavailable {
            dependency: "audit",
            reason: "the audit emitter takes no events".to_owned(),
        })
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
