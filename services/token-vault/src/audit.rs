//! Audit events of credential grants, revocations and tenant deletions, through the shared
//! [`Sink`](agentauth_audit::Sink): the `[audit]` section configures it. While auditing is on and
//! the emitter cannot take events, changes are refused (UNAVAILABLE) rather than made unaudited.

use agentauth_audit::{Event, Outcome, Subject, action};
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

/// Where a grant was refused because its credential acts as another Asana user than the
/// account's.
pub struct Mismatch<'a> {
    pub tenant: &'a str,
    pub connection: &'a str,
    pub identifier: &'a str,
    /// The Asana user the account acts as, and keeps acting as.
    pub current: &'a str,
    /// The Asana user the refused consent or token acts as.
    pub presented: &'a str,
    /// The key (`consented_…` for a consent, `presented_…` for a token) that names it.
    pub presented_key: &'static str,
}

/// The audit event of a refused grant (outcome DENIED, reason `asana_user_mismatch`), naming
/// both users and no credential.
pub fn user_mismatch(mismatch: &Mismatch<'_>) -> Event {
    let mut event = Event::new(
        mismatch.tenant,
        SERVICE,
        action::CREDENTIAL_GRANTED,
        Outcome::Denied,
    );
    event.subject = Subject {
        connection_name: Some(mismatch.connection.to_owned()),
        identifier: Some(mismatch.identifier.to_owned()),
        asana_user_gid: Some(mismatch.current.to_owned()),
    };
    event
        .details
        .insert("reason".into(), "asana_user_mismatch".into());
    event
        .details
        .insert(mismatch.presented_key.into(), mismatch.presented.into());
    event
}

#[cfg(test)]
mod tests {
    #[test]
    fn audit_is_off_without_the_section_and_on_with_it_unless_disabled() {
        assert!(!crate::parse_config("").expect("empty").audit.enabled);
        let on = crate::parse_config(
            "[audit]\nurl = \"http://127.0.0.1:9\"\nflush_interval = \"50ms\"\n",
        )
        .expect("on");
        assert!(on.audit.enabled);
        assert_eq!(on.audit.emitter.url, "http://127.0.0.1:9");
        assert_eq!(
            on.audit.emitter.flush_interval,
            std::time::Duration::from_millis(50)
        );
        let off = crate::parse_config("[audit]\nenabled = false\n").expect("off");
        assert!(!off.audit.enabled);
        let typo = crate::parse_config("[audit]\nurll = \"x\"\n").expect_err("unknown field");
        assert!(typo.contains("urll"), "{typo}");
    }
}
