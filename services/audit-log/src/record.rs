//! One stored event (a row of `audit_events`) and the hash that chains it to the one before.

use agentauth_audit::{Actor, CredentialRef, Event, Outcome, Recorded, Subject};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of a tenant's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// Every column of `audit_events`, exactly as stored and hashed.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub tenant: String,
    pub sequence: i64,
    pub event_id: String,
    pub occurred_at_us: i64,
    pub recorded_at_us: i64,
    pub actor_service: String,
    pub actor_identifier: Option<String>,
    pub connection_name: Option<String>,
    pub identifier: Option<String>,
    pub asana_user_gid: Option<String>,
    pub account_id: Option<String>,
    pub credential_version: Option<i64>,
    pub action: String,
    pub outcome: String,
    /// The details object as canonical JSON (keys sorted, no insignificant whitespace).
    pub details: String,
    pub trace_id: Option<String>,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

impl Row {
    /// Places `event` at `sequence` after `prev_hash`, recorded now, and computes its hash.
    pub fn chain(
        event: &Event,
        sequence: i64,
        prev_hash: [u8; 32],
        recorded_at: DateTime<Utc>,
    ) -> Self {
        let mut row = Self {
            tenant: event.tenant.clone(),
            sequence,
            event_id: event.id.to_string(),
            occurred_at_us: event.occurred_at.timestamp_micros(),
            recorded_at_us: recorded_at.timestamp_micros(),
            actor_service: event.actor.service.clone(),
            actor_identifier: event.actor.identifier.clone(),
            connection_name: event.subject.connection_name.clone(),
            identifier: event.subject.identifier.clone(),
            asana_user_gid: event.subject.asana_user_gid.clone(),
            account_id: event.credential.as_ref().map(|c| c.account_id.clone()),
            credential_version: event
                .credential
                .as_ref()
                .map(|c| i64::try_from(c.version).unwrap_or(i64::MAX)),
            action: event.action.clone(),
            outcome: event.outcome.as_str().to_owned(),
            // serde_json's map is ordered by key, so this is canonical. Writing a map of JSON
            // values cannot fail.
            details: serde_json::to_string(&event.details).unwrap_or_default(),
            trace_id: event.trace_id.clone(),
            prev_hash: prev_hash.to_vec(),
            hash: Vec::new(),
        };
        row.hash = row.content_hash().to_vec();
        row
    }

    /// SHA-256 over a domain tag, `prev_hash`, and every other column, each length-prefixed
    /// (and absent values told apart from empty ones), so no two rows share an encoding.
    pub fn content_hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"agentauth.audit.v1.event\0");
        hasher.update(&self.prev_hash);
        let texts = [
            Some(self.tenant.as_str()),
            Some(self.event_id.as_str()),
            Some(self.actor_service.as_str()),
            self.actor_identifier.as_deref(),
            self.connection_name.as_deref(),
            self.identifier.as_deref(),
            self.asana_user_gid.as_deref(),
            self.account_id.as_deref(),
            Some(self.action.as_str()),
            Some(self.outcome.as_str()),
            Some(self.details.as_str()),
            self.trace_id.as_deref(),
        ];
        for text in texts {
            match text {
                None => hasher.update([0]),
                Some(text) => {
                    hasher.update([1]);
                    hasher.update((text.len() as u64).to_be_bytes());
                    hasher.update(text.as_bytes());
                }
            }
        }
        for number in [
            Some(self.sequence),
            Some(self.occurred_at_us),
            Some(self.recorded_at_us),
            self.credential_version,
        ] {
            match number {
                None => hasher.update([0]),
                Some(n) => {
                    hasher.update([1]);
                    hasher.update(n.to_be_bytes());
                }
            }
        }
        hasher.finalize().into()
    }

    /// The row as an event in its chain. A row that no longer parses (altered in the
    /// database) is reported rather than hidden.
    pub fn into_recorded(self) -> Result<Recorded, String> {
        let bad = |what: &str| format!("sequence {}: stored {what} is malformed", self.sequence);
        let details = match serde_json::from_str(&self.details) {
            Ok(Value::Object(map)) => map,
            _ => return Err(bad("details")),
        };
        let event = Event {
            id: self.event_id.parse().map_err(|_| bad("event_id"))?,
            tenant: self.tenant.clone(),
            occurred_at: DateTime::from_timestamp_micros(self.occurred_at_us)
                .ok_or_else(|| bad("occurred_at"))?,
            actor: Actor {
                service: self.actor_service.clone(),
                identifier: self.actor_identifier.clone(),
            },
            subject: Subject {
                connection_name: self.connection_name.clone(),
                identifier: self.identifier.clone(),
                asana_user_gid: self.asana_user_gid.clone(),
            },
            credential: match (&self.account_id, self.credential_version) {
                (Some(account_id), Some(version)) => Some(CredentialRef {
                    account_id: account_id.clone(),
                    version: u64::try_from(version).map_err(|_| bad("credential_version"))?,
                }),
                _ => None,
            },
            action: self.action.clone(),
            outcome: Outcome::parse(&self.outcome).ok_or_else(|| bad("outcome"))?,
            details,
            trace_id: self.trace_id.clone(),
        };
        Ok(Recorded {
            sequence: u64::try_from(self.sequence).map_err(|_| bad("sequence"))?,
            recorded_at: DateTime::from_timestamp_micros(self.recorded_at_us)
                .ok_or_else(|| bad("recorded_at"))?,
            prev_hash: self
                .prev_hash
                .as_slice()
                .try_into()
                .map_err(|_| bad("prev_hash"))?,
            hash: self.hash.as_slice().try_into().map_err(|_| bad("hash"))?,
            event,
        })
    }
}

#[cfg(test)]
mod tests {
    use agentauth_audit::action;

    use super::*;

    fn event() -> Event {
        let mut event = Event::new(
            "acme",
            "token-vault",
            action::CREDENTIAL_REFRESHED,
            Outcome::Success,
        );
        event.details.insert("b".into(), 2.into());
        event.details.insert("a".into(), "x".into());
        event
    }

    #[test]
    fn hash_covers_every_column_and_the_previous_hash() {
        let row = Row::chain(&event(), 1, GENESIS, Utc::now());
        assert_eq!(row.hash, row.content_hash().to_vec());
        let mutations: [fn(&mut Row); 8] = [
            |r| r.tenant.push('x'),
            |r| r.sequence += 1,
            |r| r.occurred_at_us += 1,
            |r| r.actor_identifier = Some(String::new()),
            |r| r.credential_version = Some(0),
            |r| r.outcome = "failure".into(),
            |r| r.details = "{}".into(),
            |r| r.prev_hash = vec![1; 32],
        ];
        for mutate in mutations {
            let mut altered = row.clone();
            mutate(&mut altered);
            assert_ne!(altered.content_hash().to_vec(), row.hash, "{altered:?}");
        }
    }

    #[test]
    fn details_are_stored_canonically() {
        let row = Row::chain(&event(), 1, GENESIS, Utc::now());
        assert_eq!(row.details, r#"{"a":"x","b":2}"#);
    }

    #[test]
    fn row_round_trips_to_the_recorded_event() {
        let original = event();
        let recorded = Row::chain(&original, 7, GENESIS, Utc::now())
            .into_recorded()
            .expect("parses");
        assert_eq!(recorded.sequence, 7);
        assert_eq!(recorded.event.id, original.id);
        assert_eq!(recorded.event.details, original.details);
        assert_eq!(
            recorded.event.occurred_at.timestamp_micros(),
            original.occurred_at.timestamp_micros()
        );
    }
}
