//! The event RPCs of the ConnectorExecutor API: event subscriptions (create, list, delete) and
//! `SubscribeEvents`, the resumable stream of stored webhook events.

use std::collections::VecDeque;
use std::str::FromStr as _;
use std::sync::Arc;

use agentauth_grpc::Caller;
use agentauth_proto::executor::v1 as pb;
use serde_json::Value;
use tonic::codegen::BoxStream;
use tonic::{Request, Status};

use crate::Error;
use crate::api::ConnectorExecutorApi;
use crate::connections::Target;
use crate::events::{EventFilter, Events, State, StoredEvent, Subscription};
use crate::executor::CallContext;
use crate::tokens::AccountKey;
use crate::webhooks::Webhooks;

/// How many events one read of the store fetches for a stream.
const PAGE: i64 = 100;
/// The most subscriptions one `ListEventSubscriptions` page holds.
const MAX_PAGE_SIZE: u32 = 1000;
/// The prefix of a `SubscribeEvents` cursor.
const CURSOR_PREFIX: &str = "ev1.";

fn at_us(us: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// A stored subscription as the RPCs return it.
fn subscription_message(s: Subscription) -> pb::EventSubscription {
    pb::EventSubscription {
        subscription_id: s.subscription_id,
        tenant: s.tenant,
        connection_name: s.connection_name,
        identifier: s.identifier,
        resource_gid: s.resource_gid,
        filters_json: s.filters_json,
        webhook_gid: s.webhook_gid,
        state: match s.state {
            State::Pending => pb::EventSubscriptionState::Pending,
            State::Active => pb::EventSubscriptionState::Active,
            State::Failed => pb::EventSubscriptionState::Failed,
            State::Deleted => pb::EventSubscriptionState::Deleted,
            State::Paused => pb::EventSubscriptionState::Paused,
        }
        .into(),
        failure_reason: s.failure_reason,
        created_by: s.created_by,
        created_at: Some(at_us(s.created_at_us)),
        last_delivery_at: s.last_delivery_at_us.map(at_us),
        last_heartbeat_at: s.last_heartbeat_at_us.map(at_us),
        events_received: u64::try_from(s.events_received).unwrap_or_default(),
        last_failure_at: s.asana_last_failure_at_us.map(at_us),
        last_checked_at: s.last_checked_at_us.map(at_us),
        repaired_at: s.repaired_at_us.map(at_us),
        gap_lost_at: s.gap_lost_at_us.map(at_us),
    }
}

/// A stored event as `SubscribeEvents` sends it.
fn event_message(stored: StoredEvent) -> pb::SubscribeEventsResponse {
    let event = &stored.event;
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let change = match &event["change"] {
        Value::Null => String::new(),
        change => change.to_string(),
    };
    pb::SubscribeEventsResponse {
        cursor: format!("{CURSOR_PREFIX}{}", stored.position),
        event: Some(pb::WebhookEvent {
            event_id: stored.event_id,
            webhook_gid: stored.webhook_gid,
            connection_name: stored.connection_name,
            identifier: stored.identifier,
            resource_gid: text(&event["resource"]["gid"]),
            resource_type: text(&event["resource"]["resource_type"]),
            resource_subtype: text(&event["resource"]["resource_subtype"]),
            action: text(&event["action"]),
            parent_gid: text(&event["parent"]["gid"]),
            parent_type: text(&event["parent"]["resource_type"]),
            user_gid: text(&event["user"]["gid"]),
            change_json: change,
            created_at: event["created_at"]
                .as_str()
                .and_then(|at| prost_types::Timestamp::from_str(at).ok()),
            received_at: Some(at_us(stored.received_at_us)),
            subscription_id: stored.subscription_id,
            backfilled: stored.backfilled,
        }),
    }
}

/// A cursor's position.
fn position(cursor: &str) -> Result<i64, Error> {
    cursor
        .strip_prefix(CURSOR_PREFIX)
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| Error::InvalidArgument {
            field: "cursor",
            description: "is not a cursor of SubscribeEvents".to_owned(),
        })
}

/// One `SubscribeEvents` stream: the events after `position` the caller may see.
struct Following {
    events: Arc<Events>,
    webhooks: Arc<Webhooks>,
    caller: Arc<Caller>,
    filter: EventFilter,
    /// The last event read (sent, or skipped as another connection's).
    position: i64,
    /// Up to where the store is known to hold nothing more for this stream: an empty page
    /// after `position` read when the store's head was here.
    scanned: i64,
    pending: VecDeque<StoredEvent>,
    failed: bool,
}

impl Following {
    async fn next(&mut self) -> Option<Result<pb::SubscribeEventsResponse, Status>> {
        if self.failed {
            return None;
        }
        loop {
            while let Some(stored) = self.pending.pop_front() {
                self.position = stored.position;
                if self
                    .caller
                    .check_connection(&stored.connection_name)
                    .is_ok()
                {
                    let lag = crate::events::now_us().saturating_sub(stored.received_at_us);
                    self.webhooks.metrics.lag(std::time::Duration::from_micros(
                        u64::try_from(lag).unwrap_or_default(),
                    ));
                    return Some(Ok(event_message(stored)));
                }
            }
            if let Err(error) = self.read().await {
                self.failed = true;
                return Some(Err(error.into()));
            }
        }
    }

    /// The next page, or a wait for one when the store has nothing new for this stream. A
    /// stream that fell behind retention (events it had not read were removed) fails with
    /// OUT_OF_RANGE rather than skip them.
    async fn read(&mut self) -> Result<(), Error> {
        // Every position up to the head read now was committed before the page's query.
        let known = self.events.head().await?;
        let page = self.events.page(&self.filter, self.position, PAGE).await?;
        if self.position.max(self.scanned) < self.events.purged_through().await? {
            return Err(Error::CursorExpired);
        }
        if page.is_empty() {
            self.scanned = self.scanned.max(known).max(self.position);
            self.events.wait_after(self.scanned).await;
        } else {
            self.pending.extend(page);
        }
        Ok(())
    }
}

impl ConnectorExecutorApi {
    fn webhooks(&self) -> Result<&Arc<Webhooks>, Error> {
        self.webhooks.as_ref().ok_or(Error::NotConfigured {
            what: "event subscriptions ([webhooks] public_url)",
        })
    }

    /// `CreateEventSubscription` for an account the caller may act as.
    pub(crate) async fn create_subscription(
        &self,
        caller: &Caller,
        context: &CallContext,
        r: &pb::CreateEventSubscriptionRequest,
    ) -> Result<pb::EventSubscription, Error> {
        let webhooks = self.webhooks()?;
        self.executor.audit_ready()?;
        let connection = self
            .executor
            .connections
            .get(caller, &context.account.connection)
            .await?;
        let Target::Rest { api_base_url } = &connection.target else {
            return Err(Error::WrongKind {
                connection: connection.name.clone(),
                reason: "is an MCP connection; webhooks exist on REST connections only",
            });
        };
        let client = self.executor.rest_client(&connection, api_base_url)?;
        let subscription = webhooks
            .subscribe(context, &client, &r.resource_gid, &r.filters_json)
            .await?;
        Ok(subscription_message(subscription))
    }

    /// `ListEventSubscriptions`: a page of the tenant's, of the connections the caller may
    /// use.
    pub(crate) async fn list_subscriptions(
        &self,
        caller: &Caller,
        r: &pb::ListEventSubscriptionsRequest,
    ) -> Result<pb::ListEventSubscriptionsResponse, Error> {
        caller.check_tenant(&r.tenant)?;
        if let Some(name) = &r.connection_name {
            caller.check_connection(name)?;
        }
        let webhooks = self.webhooks()?;
        let before = match r.page_token.as_str() {
            "" => None,
            token => Some(
                uuid::Uuid::parse_str(token)
                    .map_err(|_| Error::InvalidArgument {
                        field: "page_token",
                        description: "is not a page token of ListEventSubscriptions".to_owned(),
                    })?
                    .to_string(),
            ),
        };
        let size = match r.page_size {
            0 => 100,
            size => size.min(MAX_PAGE_SIZE),
        };
        let mut page = webhooks
            .events
            .list(
                &r.tenant,
                r.connection_name.as_deref(),
                r.include_ended,
                before.as_deref(),
                i64::from(size) + 1,
            )
            .await?;
        let more = page.len() > size as usize;
        page.truncate(size as usize);
        let next_page_token = if more {
            page.last()
                .map(|s| s.subscription_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(pb::ListEventSubscriptionsResponse {
            subscriptions: page
                .into_iter()
                .filter(|s| caller.check_connection(&s.connection_name).is_ok())
                .map(subscription_message)
                .collect(),
            next_page_token,
        })
    }

    /// The tenant's subscription `id` the caller may touch, the account's call context, and
    /// its REST client (`None` when its connection is gone or is no REST one).
    async fn subscription_of<T>(
        &self,
        request: &Request<T>,
        caller: &Caller,
        tenant: &str,
        id: &str,
    ) -> Result<(Subscription, CallContext, Option<asana_client::Client>), Error> {
        caller.check_tenant(tenant)?;
        let webhooks = self.webhooks()?;
        let unknown = || Error::UnknownSubscription {
            id: id.chars().take(64).collect(),
        };
        let id = uuid::Uuid::parse_str(id)
            .map_err(|_| unknown())?
            .to_string();
        let subscription = webhooks
            .events
            .get(&id)
            .await?
            .filter(|s| s.tenant == tenant)
            .ok_or_else(unknown)?;
        caller.check_connection(&subscription.connection_name)?;
        let context = self.context(
            request,
            caller,
            AccountKey {
                tenant: subscription.tenant.clone(),
                connection: subscription.connection_name.clone(),
                identifier: subscription.identifier.clone(),
            },
        );
        let client = match self
            .executor
            .connections
            .get(caller, &subscription.connection_name)
            .await
        {
            Ok(connection) => match &connection.target {
                Target::Rest { api_base_url } => {
                    self.executor.rest_client(&connection, api_base_url).ok()
                }
                Target::Mcp { .. } => None,
            },
            Err(_) => None,
        };
        Ok((subscription, context, client))
    }

    /// The subscription `id` as it is now.
    async fn current(&self, subscription: Subscription) -> Result<pb::EventSubscription, Error> {
        let now = self
            .webhooks()?
            .events
            .get(&subscription.subscription_id)
            .await?
            .unwrap_or(subscription);
        Ok(subscription_message(now))
    }

    /// `DeleteEventSubscription`, as the account that created it. Without its connection
    /// (removed since), the webhook cannot be deleted at Asana; its deliveries are refused all
    /// the same, and Asana drops it after a day of them.
    pub(crate) async fn delete_subscription<T>(
        &self,
        request: &Request<T>,
        caller: &Caller,
        r: &pb::DeleteEventSubscriptionRequest,
    ) -> Result<pb::DeleteEventSubscriptionResponse, Error> {
        let (subscription, context, client) = self
            .subscription_of(request, caller, &r.tenant, &r.subscription_id)
            .await?;
        self.executor.audit_ready()?;
        let deleted = self
            .webhooks()?
            .unsubscribe(&context, client.as_ref(), &subscription)
            .await?;
        Ok(pb::DeleteEventSubscriptionResponse {
            subscription: Some(self.current(subscription).await?),
            already_deleted: !deleted,
        })
    }

    /// `PauseEventSubscription` or `ResumeEventSubscription`, as the account that created it:
    /// the subscription as it is now, and whether it was unchanged.
    pub(crate) async fn pause_or_resume<T>(
        &self,
        request: &Request<T>,
        caller: &Caller,
        tenant: &str,
        id: &str,
        resume: bool,
    ) -> Result<(pb::EventSubscription, bool), Error> {
        let (subscription, context, client) =
            self.subscription_of(request, caller, tenant, id).await?;
        self.executor.audit_ready()?;
        let client = client.ok_or_else(|| Error::Unavailable {
            dependency: "the subscription's connection",
            reason: "it is no longer a REST connection this service knows".to_owned(),
        })?;
        let webhooks = self.webhooks()?;
        let changed = if resume {
            webhooks.resume(&context, &client, &subscription).await?
        } else {
            webhooks.pause(&context, &client, &subscription).await?
        };
        Ok((self.current(subscription).await?, !changed))
    }

    /// `SubscribeEvents`: from the cursor (checked against retention), or from now.
    pub(crate) async fn follow_events(
        &self,
        caller: Arc<Caller>,
        r: pb::SubscribeEventsRequest,
    ) -> Result<BoxStream<pb::SubscribeEventsResponse>, Error> {
        caller.check_tenant(&r.tenant)?;
        if let Some(name) = &r.connection_name {
            caller.check_connection(name)?;
        }
        let webhooks = self.webhooks()?;
        let events = webhooks.events.clone();
        if !events.started() {
            return Err(Error::Unavailable {
                dependency: "connector-executor's database",
                reason: "the event store is not migrated yet".to_owned(),
            });
        }
        let start = match &r.cursor {
            Some(cursor) => {
                let at = position(cursor)?;
                if at < events.purged_through().await? {
                    return Err(Error::CursorExpired);
                }
                if at > events.head().await? {
                    return Err(Error::InvalidArgument {
                        field: "cursor",
                        description: "is past the newest event: it is no cursor this service gave"
                            .to_owned(),
                    });
                }
                at
            }
            None => events.head().await?,
        };
        let following = Following {
            events,
            webhooks: webhooks.clone(),
            caller,
            filter: EventFilter {
                tenant: r.tenant,
                connection_name: r.connection_name,
                resource_gid: r.resource_gid,
            },
            position: start,
            scanned: start,
            pending: VecDeque::new(),
            failed: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            following,
            |mut following| async move {
                let next = following.next().await?;
                Some((next, following))
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_opaque_positions_and_anything_else_is_refused() {
        assert_eq!(position("ev1.42").expect("a cursor"), 42);
        for bad in ["", "42", "ev1.", "ev1.-1", "ev1.x", "ev2.42"] {
            assert!(position(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_event_is_sent_with_asanas_fields() {
        let stored = StoredEvent {
            position: 7,
            event_id: "e".into(),
            subscription_id: "s".into(),
            connection_name: "asana".into(),
            identifier: "alice".into(),
            webhook_gid: "w".into(),
            event: serde_json::json!({
                "user": {"gid": "1516", "resource_type": "user"},
                "created_at": "2026-01-15T18:00:00.000Z",
                "action": "changed",
                "resource": {"gid": "1337", "resource_type": "task", "resource_subtype": "default_task"},
                "parent": null,
                "change": {"field": "assignee", "action": "changed"}
            }),
            received_at_us: 1_000_001,
            backfilled: true,
        };
        let sent = event_message(stored);
        assert_eq!(sent.cursor, "ev1.7");
        let event = sent.event.expect("event");
        assert_eq!(event.resource_gid, "1337");
        assert_eq!(event.resource_subtype, "default_task");
        assert_eq!(event.action, "changed");
        assert_eq!(event.user_gid, "1516");
        assert_eq!(event.parent_gid, "");
        assert!(event.change_json.contains("assignee"));
        assert_eq!(event.created_at.expect("created").seconds, 1_768_500_000);
        assert_eq!(event.received_at.expect("received").nanos, 1000);
        assert!(event.backfilled);
    }
}
