//! The events API: `GET /events?resource=<gid>&sync=<token>`.
//!
//! A sync token names a position in the world's change log, the resource it was issued for,
//! and when it was issued. It is opaque to clients (hex of `s1:<resource>:<position>:<issued>`)
//! and nothing is stored per token, so repeating the current token returns the same events
//! for as long as it lives. A missing token, one issued for another resource, one pointing past
//! the log, or one older than [`SYNC_TOKEN_LIFETIME`] gets Asana's 412 with a fresh token at
//! the end of the log.
//!
//! Deviations from Asana: only `/events` (not `/<resource path>/events`, whose routes would
//! have to share path segments with the resource modules), no `opt_fields`, tokens do not
//! expire early under load, the full-permissions requirement is not enforced, and any resource
//! the caller can see may be watched (Asana names tasks, projects and goals).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Value, json};

use crate::Sandbox;
use crate::error::ApiError;
use crate::rest::{Caller, Params};
use crate::world::World;

/// How long a sync token stays valid (Asana: 24 hours).
pub const SYNC_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The most events one call returns.
pub const MAX_EVENTS_PER_CALL: usize = 100;

/// Asana's message on a 412.
pub const SYNC_INVALID: &str = "Sync token invalid or too old. If you are attempting to keep resources in sync, you must fetch the full dataset for this query now and use the new sync token for the next sync.";

/// Routes outside `/api/1.0` (none).
pub fn routes(_sandbox: Sandbox) -> Router {
    Router::new()
}

/// Routes under `/api/1.0`, behind the REST middleware.
pub fn rest_routes() -> Router<Sandbox> {
    Router::new().route("/events", get(get_events))
}

/// The token for `position` in the change log of `resource`, issued at `issued` (Unix seconds).
fn encode(resource: &str, position: u64, issued: i64) -> String {
    hex::encode(format!("s1:{resource}:{position}:{issued}"))
}

/// The position `token` names, if it was issued for `resource`, points inside a log whose end
/// is `last`, and is younger than `lifetime` at `now`.
fn decode(token: &str, resource: &str, last: u64, now: i64, lifetime: Duration) -> Option<u64> {
    let text = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let mut parts = text.split(':');
    let (Some("s1"), Some(issued_for), Some(position), Some(issued), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let position: u64 = position.parse().ok()?;
    let issued: i64 = issued.parse().ok()?;
    let age = u64::try_from(now.checked_sub(issued)?).ok()?;
    (issued_for == resource && position <= last && age <= lifetime.as_secs()).then_some(position)
}

async fn get_events(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let resource = params
        .get("resource")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("resource: Missing input"))?;
    crate::webhooks::visible_resource(&sandbox, &caller, resource)?;
    let body = events_after(
        &sandbox.world(),
        resource,
        params.get("sync").map(String::as_str),
        Utc::now().timestamp(),
    )?;
    Ok(Json(body).into_response())
}

/// The `/events` answer for `resource` given the client's `sync` token, at `now`.
fn events_after(
    world: &World,
    resource: &str,
    sync: Option<&str>,
    now: i64,
) -> Result<Value, ApiError> {
    let last = world.last_seq();
    let Some(position) =
        sync.and_then(|token| decode(token, resource, last, now, SYNC_TOKEN_LIFETIME))
    else {
        return Err(ApiError::new(StatusCode::PRECONDITION_FAILED, SYNC_INVALID)
            .with_extra("sync", json!(encode(resource, last, now))));
    };
    let mut events = Vec::new();
    let mut next = last;
    let mut has_more = false;
    for change in world.changes_since(position, resource) {
        if events.len() == MAX_EVENTS_PER_CALL {
            has_more = true;
            break;
        }
        events.push(change.event.clone());
        next = change.seq;
    }
    if !has_more {
        next = last;
    }
    Ok(json!({
        "data": events,
        "sync": encode(resource, next, now),
        "has_more": has_more,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_only_for_its_resource_inside_the_log_while_young() {
        let lifetime = Duration::from_secs(60);
        let token = encode("42", 3, 1_000);
        assert_eq!(decode(&token, "42", 5, 1_030, lifetime), Some(3));
        assert_eq!(decode(&token, "43", 5, 1_030, lifetime), None);
        assert_eq!(decode(&token, "42", 2, 1_030, lifetime), None);
        assert_eq!(decode(&token, "42", 5, 1_061, lifetime), None);
        assert_eq!(decode(&token, "42", 5, 999, lifetime), None);
        assert_eq!(
            decode("de4774f6915eae04714ca93bb2f5ee81", "42", 5, 1_030, lifetime),
            None
        );
        assert_eq!(decode("not hex", "42", 5, 1_030, lifetime), None);
    }

    #[test]
    fn an_expired_token_gets_412_with_a_fresh_one() {
        let world = World::default();
        let now = 10_000_000;
        let old = now - i64::try_from(SYNC_TOKEN_LIFETIME.as_secs()).unwrap_or(i64::MAX) - 1;
        let Err(error) = events_after(&world, "42", Some(&encode("42", 0, old)), now) else {
            panic!("an expired token was accepted");
        };
        assert_eq!(error.status, StatusCode::PRECONDITION_FAILED);
        let body = error.body();
        let fresh = body["sync"].as_str().unwrap_or_default();
        assert!(events_after(&world, "42", Some(fresh), now).is_ok());
    }
}
