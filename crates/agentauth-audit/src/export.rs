//! Export rows: NDJSON (one JSON object per line) or CSV (RFC 4180, with a header line).

use crate::Recorded;
use serde_json::{Value, json};

/// The CSV header, naming the columns in order.
pub const CSV_HEADER: &str = "sequence,event_id,tenant,occurred_at,recorded_at,actor_service,actor_identifier,\
connection_name,identifier,asana_user_gid,account_id,credential_version,action,outcome,details,trace_id,prev_hash,hash\n";

/// One event as a JSON object with the export's column names.
fn object(recorded: &Recorded) -> Value {
    let event = &recorded.event;
    json!({
        "sequence": recorded.sequence,
        "event_id": event.id.to_string(),
        "tenant": event.tenant,
        "occurred_at": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "recorded_at": recorded.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "actor_service": event.actor.service,
        "actor_identifier": event.actor.identifier,
        "connection_name": event.subject.connection_name,
        "identifier": event.subject.identifier,
        "asana_user_gid": event.subject.asana_user_gid,
        "account_id": event.credential.as_ref().map(|c| c.account_id.clone()),
        "credential_version": event.credential.as_ref().map(|c| c.version),
        "action": event.action,
        "outcome": event.outcome.as_str(),
        "details": Value::Object(event.details.clone()),
        "trace_id": event.trace_id,
        "prev_hash": hex::encode(recorded.prev_hash),
        "hash": hex::encode(recorded.hash),
    })
}

/// One NDJSON line, newline included.
pub fn ndjson_line(recorded: &Recorded, out: &mut String) {
    out.push_str(&object(recorded).to_string());
    out.push('\n');
}

/// One CSV record, newline included, in [`CSV_HEADER`]'s column order.
pub fn csv_line(recorded: &Recorded, out: &mut String) {
    let Value::Object(fields) = object(recorded) else {
        return;
    };
    let columns = CSV_HEADER.trim_end().split(',');
    for (i, column) in columns.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let text = match fields.get(column) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if text.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&text.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use crate::{Event, Outcome, action};
    use chrono::Utc;

    use super::*;

    fn recorded() -> Recorded {
        let mut event = Event::new(
            "acme",
            "connector-executor",
            action::TOOL_EXECUTED,
            Outcome::Success,
        );
        event
            .details
            .insert("note".into(), "a, \"quoted\"\nline".into());
        Recorded {
            event,
            sequence: 3,
            recorded_at: Utc::now(),
            prev_hash: [1; 32],
            hash: [2; 32],
        }
    }

    #[test]
    fn ndjson_is_one_object_per_line() {
        let mut out = String::new();
        ndjson_line(&recorded(), &mut out);
        assert_eq!(out.matches('\n').count(), 1);
        let value: Value = serde_json::from_str(out.trim_end()).expect("json");
        assert_eq!(value["sequence"], 3);
        assert_eq!(value["details"]["note"], "a, \"quoted\"\nline");
    }

    #[test]
    fn csv_quotes_fields_that_need_it() {
        let mut out = String::new();
        csv_line(&recorded(), &mut out);
        assert!(out.starts_with("3,"));
        assert!(
            out.contains(r#""{""note"":""a, \""quoted\""\nline""}""#),
            "{out}"
        );
        assert_eq!(CSV_HEADER.trim_end().split(',').count(), 18);
    }
}
