//! Health and repair of event subscriptions, one replica per check.
//!
//! Every `health_interval` each ACTIVE subscription is claimed by one replica (a conditional
//! update of its next check time), which, as the account:
//! - reads the webhook at Asana: its `last_failure_at` is kept for `ListEventSubscriptions`;
//!   a webhook Asana deleted (404; Asana deletes one that failed for a day) is re-created for
//!   the same subscription and target, with a new handshake and secret, or the subscription is
//!   FAILED with why when it cannot be;
//! - fills gaps from Asana's events API: every event after the kept sync token that passes the
//!   subscription's filters and is older than `backfill_grace` is stored, marked back-filled,
//!   unless the webhook delivered it already (the same digest). A page holding a younger event
//!   is read again next time rather than passed (repeating a token is safe at Asana), so an
//!   event still on its way by webhook is not taken for a missed one. A token Asana no longer
//!   honours (412) is replaced by the fresh one it answers with and the loss is recorded.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use agentauth_audit::{Outcome, action};
use axum::body::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Webhooks, asana_message, filters};
use crate::Error;
use crate::connections::Target;
use crate::events::{Subscription, micros, now_us};
use crate::executor::CallContext;
use crate::tokens::AccountKey;

/// The most subscriptions one round claims.
const CLAIM: i64 = 100;

/// Audit details of a repair or a gap-fill.
#[derive(Debug, Serialize)]
struct Repaired<'a> {
    subscription_id: &'a str,
    resource_gid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Whether `event` passes Asana's webhook `filters` (none: everything): one filter whose every
/// key matches.
pub(super) fn passes(event: &Value, filters: Option<&Value>) -> bool {
    let Some(Value::Array(filters)) = filters else {
        return true;
    };
    filters.is_empty()
        || filters.iter().any(|filter| {
            let same =
                |key: &str, actual: &Value| filter.get(key).is_none_or(|want| want == actual);
            same("resource_type", &event["resource"]["resource_type"])
                && same("resource_subtype", &event["resource"]["resource_subtype"])
                && same("action", &event["action"])
                && filter
                    .get("fields")
                    .and_then(Value::as_array)
                    .is_none_or(|fields| fields.contains(&event["change"]["field"]))
        })
}

/// An RFC 3339 time in microseconds since the epoch.
fn micros_of(text: &str) -> Option<i64> {
    let at = prost_types::Timestamp::from_str(text).ok()?;
    Some(at.seconds * 1_000_000 + i64::from(at.nanos / 1000))
}

impl Webhooks {
    /// Checks due subscriptions until `shutdown`, once the event store is migrated.
    pub(crate) async fn watch_health(self: Arc<Self>, shutdown: CancellationToken) {
        let round =
            (self.health_interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(round) => {}
            }
            if !self.events.started() {
                continue;
            }
            match self.events.settle_stale(self.handshake_window * 2).await {
                Ok(0) => {}
                Ok(settled) => tracing::warn!(
                    settled,
                    "settled subscriptions whose registration was cut short"
                ),
                Err(error) => tracing::warn!(%error, "cannot settle stale subscriptions"),
            }
            let due = match self.events.claim_due(self.health_interval, CLAIM).await {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "cannot read the subscriptions due a health check");
                    continue;
                }
            };
            for subscription in due {
                let span = tracing::info_span!(
                    "webhook.health",
                    subscription_id = %subscription.subscription_id
                );
                if let Err(error) = self.check(&subscription).instrument(span).await {
                    tracing::warn!(
                        subscription_id = %subscription.subscription_id,
                        %error,
                        "a webhook health check failed; it is retried at the next"
                    );
                }
            }
        }
    }

    /// One subscription's check: its webhook at Asana, a repair if it is gone, then gap-fill.
    async fn check(&self, subscription: &Subscription) -> Result<(), Error> {
        let context = CallContext {
            account: AccountKey {
                tenant: subscription.tenant.clone(),
                connection: subscription.connection_name.clone(),
                identifier: subscription.identifier.clone(),
            },
            caller: subscription.created_by.clone(),
            deadline: Instant::now() + self.executor.limiter.max_wait(),
            via: None,
        };
        let connection = self
            .executor
            .connections
            .named(&subscription.connection_name)
            .await?;
        let Target::Rest { api_base_url } = &connection.target else {
            return Ok(());
        };
        let client = self.executor.rest_client(&connection, api_base_url)?;
        let path = format!("/webhooks/{}", subscription.webhook_gid);
        let read = self
            .send(
                &context,
                &client,
                reqwest::Method::GET,
                &path,
                &[],
                Bytes::new(),
            )
            .await?;
        match read.status.as_u16() {
            200 => {
                let webhook: Value = serde_json::from_slice(&read.body).unwrap_or_default();
                let failed_at = webhook["data"]["last_failure_at"]
                    .as_str()
                    .and_then(micros_of);
                self.events
                    .checked(&subscription.subscription_id, failed_at)
                    .await?;
            }
            404 => {
                if !self.repair(&context, &client, subscription).await? {
                    return Ok(());
                }
            }
            status => {
                return Err(Error::AsanaRefused {
                    what: "reading the webhook",
                    message: asana_message(status, &read.body),
                });
            }
        }
        self.backfill(&context, &client, subscription).await
    }

    /// Re-creates the webhook Asana deleted; whether the subscription is ACTIVE again.
    async fn repair(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        subscription: &Subscription,
    ) -> Result<bool, Error> {
        let id = &subscription.subscription_id;
        if !self
            .events
            .await_new_webhook(id, crate::events::State::Active)
            .await?
        {
            return Ok(false);
        }
        tracing::info!(subscription_id = %id, "Asana deleted the webhook; re-creating it");
        let outcome = self
            .register(context, client, subscription, super::Registering::Repair)
            .await
            .map_err(|refused| refused.to_string());
        self.executor
            .record_action(
                action::WEBHOOK_REPAIRED,
                &subscription.created_by,
                &subscription.tenant,
                Some(&subscription.identifier),
                if outcome.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                &Repaired {
                    subscription_id: id,
                    resource_gid: &subscription.resource_gid,
                    events: None,
                    error: outcome.as_ref().err().map(String::as_str),
                },
            )
            .await;
        Ok(outcome.is_ok())
    }

    /// Stores what Asana's events API has that the webhook missed.
    async fn backfill(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        subscription: &Subscription,
    ) -> Result<(), Error> {
        let id = &subscription.subscription_id;
        let resource = subscription.resource_gid.as_str();
        let mut token = subscription.sync_token.clone();
        if token.is_empty() {
            if let Some(fresh) = self.fresh_sync_token(context, client, resource).await {
                self.events.set_sync_token(id, &fresh).await?;
            }
            return Ok(());
        }
        let filters = filters(&subscription.filters_json).unwrap_or_default();
        let mut stored = 0;
        loop {
            let answer = self
                .send(
                    context,
                    client,
                    reqwest::Method::GET,
                    "/events",
                    &[("resource", resource), ("sync", &token)],
                    Bytes::new(),
                )
                .await?;
            let page: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            let next = page["sync"].as_str().unwrap_or_default().to_owned();
            match answer.status.as_u16() {
                200 => {}
                412 if !next.is_empty() => {
                    self.events.gap_lost(id, &next).await?;
                    self.record_backfill(action::WEBHOOK_GAP_LOST, subscription, stored, Some("Asana no longer honours the kept sync token; events since then may be lost"))
                        .await;
                    return Ok(());
                }
                status => {
                    return Err(Error::AsanaRefused {
                        what: "reading its events",
                        message: asana_message(status, &answer.body),
                    });
                }
            }
            let settled = now_us() - micros(self.backfill_grace);
            let events = page["data"].as_array().cloned().unwrap_or_default();
            let young = events.iter().any(|event| {
                event["created_at"]
                    .as_str()
                    .and_then(micros_of)
                    .is_none_or(|at| at > settled)
            });
            let missed: Vec<Value> = events
                .into_iter()
                .filter(|event| passes(event, filters.as_ref()))
                .filter(|event| {
                    event["created_at"]
                        .as_str()
                        .and_then(micros_of)
                        .is_some_and(|at| at <= settled)
                })
                .collect();
            if !missed.is_empty() {
                stored += self.events.store(subscription, &missed, true).await?;
            }
            if young || next.is_empty() {
                break;
            }
            self.events.set_sync_token(id, &next).await?;
            token = next;
            if page["has_more"] != Value::Bool(true) {
                break;
            }
        }
        if stored > 0 {
            self.metrics.backfilled(stored);
            tracing::info!(subscription_id = %id, stored, "back-filled events the webhook missed");
            self.record_backfill(action::WEBHOOK_BACKFILLED, subscription, stored, None)
                .await;
        }
        Ok(())
    }

    async fn record_backfill(
        &self,
        action_name: &'static str,
        subscription: &Subscription,
        events: u64,
        error: Option<&str>,
    ) {
        self.executor
            .record_action(
                action_name,
                &subscription.created_by,
                &subscription.tenant,
                Some(&subscription.identifier),
                if error.is_some() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                &Repaired {
                    subscription_id: &subscription.subscription_id,
                    resource_gid: &subscription.resource_gid,
                    events: Some(events),
                    error,
                },
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_event_passes_when_one_filter_matches_every_key_it_names() {
        let event = json!({
            "action": "changed",
            "resource": {"resource_type": "task", "resource_subtype": "default_task"},
            "change": {"field": "notes"}
        });
        assert!(passes(&event, None));
        assert!(passes(&event, Some(&json!([]))));
        assert!(passes(
            &event,
            Some(&json!([{"resource_type": "task", "action": "changed"}]))
        ));
        assert!(passes(
            &event,
            Some(&json!([{"resource_type": "task", "fields": ["notes"]}]))
        ));
        assert!(!passes(
            &event,
            Some(&json!([{"resource_type": "task", "fields": ["due_on"]}]))
        ));
        assert!(!passes(&event, Some(&json!([{"resource_type": "story"}]))));
        assert!(passes(
            &event,
            Some(&json!([{"resource_type": "story"}, {"action": "changed"}]))
        ));
    }

    #[test]
    fn times_are_read_to_the_microsecond() {
        assert_eq!(micros_of("1970-01-01T00:00:01.000002Z"), Some(1_000_002));
        assert_eq!(micros_of("yesterday"), None);
    }
}
