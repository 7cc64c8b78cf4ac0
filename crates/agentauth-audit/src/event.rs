//! [`Event`] and its wire form, `agentauth.audit.v1.Event`.

use agentauth_proto::audit::v1 as pb;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// The actions agentauth records. Other dotted lowercase names are accepted too, so a new
/// emitter does not need a new audit-log.
pub mod action {
    pub const CREDENTIAL_GRANTED: &str = "credential.granted";
    pub const CREDENTIAL_REFRESHED: &str = "credential.refreshed";
    pub const CREDENTIAL_REFRESH_FAILED: &str = "credential.refresh_failed";
    pub const CREDENTIAL_NEEDS_REAUTH: &str = "credential.needs_reauth";
    pub const CREDENTIAL_REVOKED: &str = "credential.revoked";
    pub const TENANT_DELETED: &str = "tenant.deleted";
    pub const TENANT_KEY_ROTATED: &str = "tenant.key_rotated";
    pub const AUDIT_PURGED: &str = "audit.purged";
    pub const TOOL_EXECUTED: &str = "tool.executed";
    pub const PROXY_REQUEST: &str = "proxy.request";
    pub const DRIFT_DETECTED: &str = "drift.detected";
    pub const DRIFT_APPROVED: &str = "drift.approved";
    pub const DRIFT_ALERT: &str = "drift.alert";
    pub const TOOLS_LISTED: &str = "tools.listed";
    pub const MCP_SESSION_MINTED: &str = "mcp.session_minted";
    pub const MCP_SESSION_REVOKED: &str = "mcp.session_revoked";
    pub const MCP_PROTOCOL_SESSION_ENDED: &str = "mcp.protocol_session_ended";
    pub const WEBHOOK_RECEIVED: &str = "webhook.received";
    pub const WEBHOOK_SUBSCRIBED: &str = "webhook.subscribed";
    pub const WEBHOOK_UNSUBSCRIBED: &str = "webhook.unsubscribed";
    pub const WEBHOOK_PAUSED: &str = "webhook.paused";
    pub const WEBHOOK_RESUMED: &str = "webhook.resumed";
    pub const WEBHOOK_REFUSED: &str = "webhook.refused";
    pub const WEBHOOK_REPAIRED: &str = "webhook.repaired";
    pub const WEBHOOK_BACKFILLED: &str = "webhook.backfilled";
    pub const WEBHOOK_GAP_LOST: &str = "webhook.gap_lost";
}

/// How a tool input is recorded when its connection does not opt in to capture:
/// `sha256:<hex>`, enough to match two calls without keeping what was sent.
pub fn input_digest(input: &[u8]) -> String {
    use sha2::Digest as _;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(71);
    text.push_str("sha256:");
    for byte in sha2::Sha256::digest(input) {
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    text
}

/// How an audited action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
    /// Refused by policy: a caller not allowed, a tool pinned, a budget exhausted.
    Denied,
}

impl Outcome {
    /// The stable lowercase name used in storage and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Denied => "denied",
        }
    }

    /// The inverse of [`Outcome::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "success" => Some(Self::Success),
            "failure" => Some(Self::Failure),
            "denied" => Some(Self::Denied),
            _ => None,
        }
    }
}

impl From<Outcome> for pb::Outcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Success => Self::Success,
            Outcome::Failure => Self::Failure,
            Outcome::Denied => Self::Denied,
        }
    }
}

impl TryFrom<pb::Outcome> for Outcome {
    type Error = ();

    fn try_from(outcome: pb::Outcome) -> Result<Self, ()> {
        match outcome {
            pb::Outcome::Success => Ok(Self::Success),
            pb::Outcome::Failure => Ok(Self::Failure),
            pb::Outcome::Denied => Ok(Self::Denied),
            pb::Outcome::Unspecified => Err(()),
        }
    }
}

/// Who acted: the calling service and, where known, the end user it acted for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Actor {
    pub service: String,
    pub identifier: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    pub connection_name: Option<String>,
    pub identifier: Option<String>,
    pub asana_user_gid: Option<String>,
}

/// Which credential executed the action: an account and the version of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    pub account_id: String,
    pub version: u64,
}

/// One audited fact, as its emitter saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// A UUIDv7: ordered by time, and the idempotency key of appends.
    pub id: Uuid,
    pub tenant: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: Actor,
    pub subject: Subject,
    pub credential: Option<CredentialRef>,
    pub action: String,
    pub outcome: Outcome,
    /// A JSON object of non-secret facts (status codes, latencies, digests).
    pub details: Map<String, Value>,
    pub trace_id: Option<String>,
}

impl Event {
    /// A new event that happened now, with a fresh id.
    pub fn new(
        tenant: impl Into<String>,
        service: impl Into<String>,
        action: &str,
        outcome: Outcome,
    ) -> Self {
        Self::with_id(Uuid::now_v7(), tenant, service, action, outcome)
    }

    /// A new event that happened now, with the UUIDv7 `id` its emitter already gave the fact
    /// (e.g. the execution id a caller was answered with), in the trace of the current span
    /// (the request's, continued from the caller's `traceparent` when it sent one).
    pub fn with_id(
        id: Uuid,
        tenant: impl Into<String>,
        service: impl Into<String>,
        action: &str,
        outcome: Outcome,
    ) -> Self {
        Self {
            id,
            tenant: tenant.into(),
            occurred_at: Utc::now(),
            actor: Actor {
                service: service.into(),
                identifier: None,
            },
            subject: Subject::default(),
            credential: None,
            action: action.to_owned(),
            outcome,
            details: Map::new(),
            trace_id: agentauth_grpc::current_trace_id(),
        }
    }
}

/// An event in its tenant's chain, as audit-log stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub event: Event,
    /// Its place in the tenant's chain: 1, 2, 3… with no gaps.
    pub sequence: u64,
    pub recorded_at: DateTime<Utc>,
    /// The hash of the previous event in the chain (all zeroes for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 over this event's canonical content and `prev_hash`.
    pub hash: [u8; 32],
}

/// A field of a wire event that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct InvalidEvent {
    pub field: &'static str,
    pub description: String,
}

fn invalid(field: &'static str, description: impl Into<String>) -> InvalidEvent {
    InvalidEvent {
        field,
        description: description.into(),
    }
}

/// The longest name, identifier or action accepted, in bytes.
const MAX_NAME: usize = 256;
/// The largest `details` object accepted, as JSON bytes.
pub const MAX_DETAILS: usize = 16 * 1024;

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn bounded(field: &'static str, text: &str, required: bool) -> Result<(), InvalidEvent> {
    if required && text.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if text.len() > MAX_NAME {
        return Err(invalid(field, format!("is longer than {MAX_NAME} bytes")));
    }
    Ok(())
}

/// A wire timestamp as a UTC time, if it is one.
pub fn timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    DateTime::from_timestamp(ts.seconds, nanos)
}

/// A UTC time as a wire timestamp.
pub fn wire_timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

impl Event {
    /// The checks audit-log applies to an event sent to `Append`, made on the wire form
    /// without taking it apart, except that `details_json` is only measured: whether it is a
    /// JSON object is checked where it is parsed ([`Event::try_from`]), and an emitter that
    /// writes it from a map cannot get that wrong.
    pub(crate) fn check_wire(event: &pb::Event) -> Result<(), InvalidEvent> {
        let id =
            Uuid::parse_str(&event.event_id).map_err(|_| invalid("event_id", "must be a UUID"))?;
        if id.get_version_num() != 7 {
            return Err(invalid("event_id", "must be a UUIDv7"));
        }
        bounded("tenant", &event.tenant, true)?;
        event
            .occurred_at
            .as_ref()
            .ok_or_else(|| invalid("occurred_at", "is required"))
            .and_then(|ts| {
                timestamp(ts).ok_or_else(|| invalid("occurred_at", "is not a valid time"))
            })?;
        bounded(
            "actor.service",
            event.actor.as_ref().map_or("", |a| a.service.as_str()),
            true,
        )?;
        if let Some(actor) = &event.actor {
            bounded("actor.identifier", &actor.identifier, false)?;
        }
        if let Some(subject) = &event.subject {
            bounded("subject.connection_name", &subject.connection_name, false)?;
            bounded("subject.identifier", &subject.identifier, false)?;
            bounded("subject.asana_user_gid", &subject.asana_user_gid, false)?;
        }
        if let Some(c) = &event.credential
            && !c.account_id.is_empty()
        {
            bounded("credential.account_id", &c.account_id, true)?;
        }
        bounded("action", &event.action, true)?;
        if !event
            .action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        {
            return Err(invalid(
                "action",
                "must be dotted lowercase, e.g. `tool.executed`",
            ));
        }
        pb::Outcome::try_from(event.outcome)
            .ok()
            .and_then(|o| Outcome::try_from(o).ok())
            .ok_or_else(|| invalid("outcome", "must be SUCCESS, FAILURE or DENIED"))?;
        if event.details_json.len() > MAX_DETAILS {
            return Err(invalid(
                "details_json",
                format!("is larger than {MAX_DETAILS} bytes"),
            ));
        }
        bounded("trace_id", &event.trace_id, false)
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = InvalidEvent;

    /// Validates an event sent to `Append`. Server-assigned fields (sequence, recorded_at,
    /// hashes) are ignored: a client cannot choose its place in the chain.
    fn try_from(event: pb::Event) -> Result<Self, InvalidEvent> {
        Self::check_wire(&event)?;
        let id =
            Uuid::parse_str(&event.event_id).map_err(|_| invalid("event_id", "must be a UUID"))?;
        let occurred_at = event
            .occurred_at
            .as_ref()
            .and_then(timestamp)
            .ok_or_else(|| invalid("occurred_at", "is not a valid time"))?;
        let actor = event.actor.unwrap_or_default();
        let subject = event.subject.unwrap_or_default();
        let credential = event
            .credential
            .filter(|c| !c.account_id.is_empty())
            .map(|c| CredentialRef {
                account_id: c.account_id,
                version: c.version,
            });
        let outcome = pb::Outcome::try_from(event.outcome)
            .ok()
            .and_then(|o| Outcome::try_from(o).ok())
            .ok_or_else(|| invalid("outcome", "must be SUCCESS, FAILURE or DENIED"))?;
        let details = if event.details_json.is_empty() {
            Map::new()
        } else {
            match serde_json::from_str(&event.details_json) {
                Ok(Value::Object(map)) => map,
                _ => return Err(invalid("details_json", "must be a JSON object")),
            }
        };
        Ok(Self {
            id,
            tenant: event.tenant,
            occurred_at,
            actor: Actor {
                service: actor.service,
                identifier: optional(actor.identifier),
            },
            subject: Subject {
                connection_name: optional(subject.connection_name),
                identifier: optional(subject.identifier),
                asana_user_gid: optional(subject.asana_user_gid),
            },
            credential,
            action: event.action,
            outcome,
            details,
            trace_id: optional(event.trace_id),
        })
    }
}

impl From<Event> for pb::Event {
    fn from(event: Event) -> Self {
        Self {
            event_id: event.id.to_string(),
            tenant: event.tenant,
            sequence: 0,
            occurred_at: Some(wire_timestamp(event.occurred_at)),
            recorded_at: None,
            actor: Some(pb::Actor {
                service: event.actor.service,
                identifier: event.actor.identifier.unwrap_or_default(),
            }),
            subject: Some(pb::Subject {
                connection_name: event.subject.connection_name.unwrap_or_default(),
                identifier: event.subject.identifier.unwrap_or_default(),
                asana_user_gid: event.subject.asana_user_gid.unwrap_or_default(),
            }),
            credential: event.credential.map(|c| pb::Credential {
                account_id: c.account_id,
                version: c.version,
            }),
            action: event.action,
            outcome: pb::Outcome::from(event.outcome).into(),
            details_json: if event.details.is_empty() {
                String::new()
            } else {
                Value::Object(event.details).to_string()
            },
            trace_id: event.trace_id.unwrap_or_default(),
            prev_hash: Vec::new(),
            hash: Vec::new(),
        }
    }
}

impl From<Recorded> for pb::Event {
    fn from(recorded: Recorded) -> Self {
        Self {
            sequence: recorded.sequence,
            recorded_at: Some(wire_timestamp(recorded.recorded_at)),
            prev_hash: recorded.prev_hash.to_vec(),
            hash: recorded.hash.to_vec(),
            ..recorded.event.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut event = Event::new(
            "acme",
            "connector-executor",
            action::TOOL_EXECUTED,
            Outcome::Success,
        );
        event.subject.identifier = Some("user_42".into());
        event.credential = Some(CredentialRef {
            account_id: "acct".into(),
            version: 3,
        });
        event.details.insert("status".into(), 200.into());
        event.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        event
    }

    #[test]
    fn input_digest_is_sha256_and_keeps_nothing_of_the_input() {
        let digest = input_digest(br#"{"name":"secret plan"}"#);
        assert_eq!(digest.len(), "sha256:".len() + 64);
        assert!(!digest.contains("secret"));
        assert_eq!(digest, input_digest(br#"{"name":"secret plan"}"#));
        assert_ne!(digest, input_digest(b"{}"));
        assert_eq!(
            input_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn round_trips_through_the_wire_form() {
        let event = sample();
        let back = Event::try_from(pb::Event::from(event.clone())).expect("valid");
        assert_eq!(back, event);
    }

    type Mutation = fn(&mut pb::Event);

    #[test]
    fn rejects_each_malformed_field_by_name() {
        let cases: [(&str, Mutation); 9] = [
            ("event_id", |e| e.event_id = "nope".into()),
            ("event_id", |e| e.event_id = Uuid::new_v4().to_string()),
            ("tenant", |e| e.tenant.clear()),
            ("occurred_at", |e| e.occurred_at = None),
            ("actor.service", |e| e.actor = None),
            ("action", |e| e.action = "Tool Executed".into()),
            ("outcome", |e| e.outcome = 0),
            ("details_json", |e| e.details_json = "[1]".into()),
            ("tenant", |e| e.tenant = "x".repeat(MAX_NAME + 1)),
        ];
        for (field, mutate) in cases {
            let mut wire = pb::Event::from(sample());
            mutate(&mut wire);
            let error = Event::try_from(wire).expect_err(field);
            assert_eq!(error.field, field);
        }
    }

    #[test]
    fn client_cannot_choose_its_place_in_the_chain() {
        let mut wire = pb::Event::from(sample());
        wire.sequence = 99;
        wire.hash = vec![1; 32];
        let event = Event::try_from(wire).expect("valid");
        let recorded = pb::Event::from(Recorded {
            event,
            sequence: 1,
            recorded_at: Utc::now(),
            prev_hash: [0; 32],
            hash: [2; 32],
        });
        assert_eq!(recorded.sequence, 1);
        assert_eq!(recorded.hash, vec![2; 32]);
    }

    mod untrusted {
        use proptest::prelude::*;

        use super::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just("acme".to_owned()),
                Just("tool.executed".to_owned()),
                Just("{\"a\": 1}".to_owned()),
                Just(Uuid::now_v7().to_string()),
                any::<String>(),
            ]
        }

        fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
            proptest::option::of(
                (any::<i64>(), any::<i32>())
                    .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
            )
        }

        fn event() -> impl Strategy<Value = pb::Event> {
            (
                (text(), text(), any::<u64>(), timestamp(), timestamp()),
                (
                    proptest::option::of((text(), text())),
                    proptest::option::of((text(), text(), text())),
                    proptest::option::of((text(), any::<u64>())),
                ),
                (text(), any::<i32>(), text(), text()),
                (
                    proptest::collection::vec(any::<u8>(), 0..40),
                    proptest::collection::vec(any::<u8>(), 0..40),
                ),
            )
                .prop_map(
                    |(
                        (event_id, tenant, sequence, occurred_at, recorded_at),
                        (actor, subject, credential),
                        (action, outcome, details_json, trace_id),
                        (prev_hash, hash),
                    )| pb::Event {
                        event_id,
                        tenant,
                        sequence,
                        occurred_at,
                        recorded_at,
                        actor: actor.map(|(service, identifier)| pb::Actor {
                            service,
                            identifier,
                        }),
                        subject: subject.map(|(connection_name, identifier, asana_user_gid)| {
                            pb::Subject {
                                connection_name,
                                identifier,
                                asana_user_gid,
                            }
                        }),
                        credential: credential.map(|(account_id, version)| pb::Credential {
                            account_id,
                            version,
                        }),
                        action,
                        outcome,
                        details_json,
                        trace_id,
                        prev_hash,
                        hash,
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// What a caller appends is untrusted: any event either converts (and then converts
            /// back to the same content) or names the field that is wrong.
            #[test]
            fn any_wire_event_is_accepted_whole_or_refused_by_field(wire in event()) {
                match Event::try_from(wire.clone()) {
                    Ok(event) => {
                        let again = pb::Event::from(event);
                        prop_assert_eq!(again.event_id, wire.event_id);
                        prop_assert_eq!(again.tenant, wire.tenant);
                        prop_assert_eq!(again.action, wire.action);
                    }
                    Err(invalid) => {
                        prop_assert!(!invalid.field.is_empty());
                        prop_assert!(!invalid.description.is_empty());
                    }
                }
            }
        }
    }
}
