//! Asana webhooks: event subscriptions registered as an account, and the intake that takes
//! their handshakes and deliveries (an HTTP listener of its own, for an Ingress).
//!
//! - Subscribing records the subscription PENDING, then asks Asana (through the one call path:
//!   token, rate slots, 401 retry) to create a webhook whose target is
//!   `<public_url>/webhooks/<subscription id>`. Asana's handshake may reach any replica: it
//!   takes the one handshake the pending row admits, hands the `X-Hook-Secret` to token-vault
//!   (Vault; never this database, a log or an audit row) and echoes it. Once Asana answers 201
//!   the subscription is ACTIVE.
//! - A delivery is verified before anything is read from it: the subscription must still take
//!   deliveries, `X-Hook-Signature` must be the HMAC-SHA256 of the raw body under its secret
//!   (compared in constant time), the body at most `max_body_bytes` and well-formed. Only then
//!   is it stored ([`crate::events`]), and only once it is stored is it answered 200. A refusal
//!   changes nothing and is an audit event.

mod health;
mod metrics;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use agentauth_audit::{Outcome, action};
use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::vault::v1 as vault_pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tracing::Instrument as _;

use crate::Error;
use crate::events::{Events, State as SubscriptionState, Subscription, micros, now_us};
use crate::executor::{CallContext, Executor};
use crate::proxy::Checked;
use crate::rest::Output;
use crate::trail::Trail;

/// The handshake header Asana sends once and expects echoed.
const SECRET_HEADER: &str = "x-hook-secret";
/// The header of a delivery's signature: lowercase hex HMAC-SHA256 of the raw body.
const SIGNATURE_HEADER: &str = "x-hook-signature";
/// The longest secret accepted in a handshake.
const MAX_SECRET: usize = 1024;
/// The most secrets kept in memory; past it the cache starts again.
const MAX_CACHED_SECRETS: usize = 10_000;
/// The largest `filters_json` accepted.
const MAX_FILTERS: usize = 8 * 1024;
/// The catalogue tool that creates a webhook: through `ExecuteTool` it registers an event
/// subscription.
pub(crate) const CREATE_TOOL: &str = "asana_webhook_create";
/// Who an intake refusal is attributed to in the audit trail.
const INTAKE_ACTOR: &str = "asana-webhook";

/// `[webhooks]`: event subscriptions and their intake.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// The intake's address as Asana reaches it (through the Ingress): each webhook's target
    /// is `<public_url>/webhooks/<subscription id>`. Without it there are no event
    /// subscriptions and no intake; with it `[database]` is needed.
    pub public_url: Option<String>,
    /// Where the intake listens.
    pub listen: SocketAddr,
    /// The largest delivery accepted, in bytes; a larger one is 413.
    pub max_body_bytes: usize,
    /// The most events one delivery may carry.
    pub max_events_per_delivery: usize,
    /// How long after a subscription is created its handshake is taken.
    #[serde(with = "humantime_serde")]
    pub handshake_window: Duration,
    /// How long stored events stay readable by `SubscribeEvents` cursors.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often a waiting `SubscribeEvents` stream looks for events no notification told of
    /// (another replica on SQLite); on PostgreSQL `LISTEN/NOTIFY` wakes it at once.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The most deliveries handled at once; more wait.
    pub max_concurrent_requests: usize,
    /// How often each subscription's webhook is checked at Asana (re-created if Asana deleted
    /// it) and its gap-fill from Asana's events API runs; one replica does each check.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// How old an event from Asana's events API must be before gap-fill stores it as one the
    /// webhook missed (younger ones may still be on their way by webhook).
    #[serde(with = "humantime_serde")]
    pub backfill_grace: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 8091)),
            max_body_bytes: 1024 * 1024,
            max_events_per_delivery: 1000,
            handshake_window: Duration::from_secs(60),
            retention: Duration::from_secs(7 * 24 * 3600),
            poll_interval: Duration::from_secs(1),
            max_concurrent_requests: 256,
            health_interval: Duration::from_secs(300),
            backfill_grace: Duration::from_secs(120),
        }
    }
}

/// A webhook secret: its `Debug` prints `[redacted]`.
#[derive(Clone)]
struct HookSecret(Arc<str>);

impl fmt::Debug for HookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Event subscriptions: the store, the intake's state, token-vault for secrets.
#[derive(Debug)]
pub(crate) struct Webhooks {
    pub events: Arc<Events>,
    pub metrics: metrics::Metrics,
    public_url: String,
    vault: TokenVaultClient<AuthenticatedChannel>,
    /// Secrets read or taken, by subscription, with the handshake they came from: a row whose
    /// handshake differs (its webhook was re-created) makes the entry stale.
    secrets: Mutex<HashMap<String, (HookSecret, Option<i64>)>>,
    executor: Arc<Executor>,
    handshake_window: Duration,
    max_events: usize,
    health_interval: Duration,
    backfill_grace: Duration,
}

/// Audit details of a subscription created or deleted.
#[derive(Debug, Serialize)]
struct SubscriptionChanged<'a> {
    subscription_id: &'a str,
    connection: &'a str,
    resource_gid: &'a str,
    webhook_gid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Audit details of a refused delivery or handshake.
#[derive(Debug, Serialize)]
struct DeliveryRefused<'a> {
    subscription_id: &'a str,
    reason: &'a str,
}

/// Why the intake refused a request, and its status.
#[derive(Debug)]
enum Refusal {
    UnknownSubscription,
    HandshakeRefused,
    BadSignature,
    Malformed(&'static str),
    Unavailable,
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Self::UnknownSubscription => StatusCode::NOT_FOUND,
            Self::HandshakeRefused => StatusCode::FORBIDDEN,
            Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Its index in [`metrics::REFUSALS`].
    fn metric(&self) -> usize {
        match self {
            Self::UnknownSubscription => 0,
            Self::HandshakeRefused => 1,
            Self::BadSignature => 2,
            Self::Malformed(_) => 3,
            Self::Unavailable => 4,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::UnknownSubscription => "unknown or ended subscription",
            Self::HandshakeRefused => "no handshake is expected for this subscription",
            Self::BadSignature => "missing or wrong X-Hook-Signature",
            Self::Malformed(why) => why,
            Self::Unavailable => "the event store or token-vault is unavailable",
        }
    }
}

/// Why a subscription's webhook is being created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Registering {
    /// A new subscription.
    New,
    /// Asana deleted the webhook of an ACTIVE one.
    Repair,
    /// A PAUSED one is resumed.
    Resume,
}

/// Why a webhook was not registered.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Asana answered no (its message).
    Asana(String),
    /// Asana could not be asked: the account, the rate limit, a dependency.
    Call(Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Asana(message) => f.write_str(message),
            Self::Call(error) => write!(f, "{error}"),
        }
    }
}

/// The digest kept of a target key.
fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Validates `filters_json`: empty, or a JSON array of objects.
fn filters(text: &str) -> Result<Option<Value>, Error> {
    let invalid = |description: String| Error::InvalidArgument {
        field: "filters_json",
        description,
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_FILTERS {
        return Err(invalid(format!(
            "{} bytes exceed the limit of {MAX_FILTERS}",
            text.len()
        )));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) if items.iter().all(Value::is_object) => {
            Ok(Some(Value::Array(items)))
        }
        Ok(_) => Err(invalid("must be a JSON array of filter objects".to_owned())),
        Err(e) => Err(invalid(format!("is not valid JSON: {e}"))),
    }
}

/// Validates a resource gid: what Asana's gids are made of.
fn resource_gid(gid: &str) -> Result<(), Error> {
    if gid.is_empty()
        || gid.len() > 64
        || !gid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::InvalidArgument {
            field: "resource_gid",
            description: "must be an Asana gid (letters, digits, `_` or `-`, at most 64)"
                .to_owned(),
        });
    }
    Ok(())
}

/// Asana's first error message in an answer's body, or its status.
fn asana_message(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v["errors"][0]["message"]
                .as_str()
                .map(|m| m.chars().take(500).collect())
        })
        .unwrap_or_else(|| format!("HTTP {status}"))
}

impl Webhooks {
    pub(crate) fn new(
        config: &WebhooksConfig,
        public_url: &str,
        events: Arc<Events>,
        vault: TokenVaultClient<AuthenticatedChannel>,
        executor: Arc<Executor>,
    ) -> Self {
        Self {
            events,
            metrics: metrics::Metrics::default(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            vault,
            secrets: Mutex::new(HashMap::new()),
            executor,
            handshake_window: config.handshake_window,
            max_events: config.max_events_per_delivery,
            health_interval: config.health_interval,
            backfill_grace: config.backfill_grace,
        }
    }

    /// The target Asana posts a subscription's deliveries to: its id and a key drawn for this
    /// webhook, which nobody but Asana learns (callers see the id, never the key).
    fn target(&self, subscription_id: &str, key: &str) -> String {
        format!("{}/webhooks/{subscription_id}/{key}", self.public_url)
    }

    /// Registers a webhook on `resource` as the account of `context`, through `client`.
    pub(crate) async fn subscribe(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        resource: &str,
        filters_json: &str,
    ) -> Result<Subscription, Error> {
        resource_gid(resource)?;
        let filters = filters(filters_json)?;
        let now = now_us();
        let mut subscription = Subscription {
            subscription_id: uuid::Uuid::now_v7().to_string(),
            tenant: context.account.tenant.clone(),
            connection_name: context.account.connection.clone(),
            identifier: context.account.identifier.clone(),
            resource_gid: resource.to_owned(),
            filters_json: filters.as_ref().map(Value::to_string).unwrap_or_default(),
            webhook_gid: String::new(),
            target_key_sha256: String::new(),
            state: SubscriptionState::Pending,
            failure_reason: String::new(),
            created_by: context.caller.clone(),
            created_at_us: now,
            pending_since_us: now,
            handshake_at_us: None,
            last_delivery_at_us: None,
            last_heartbeat_at_us: None,
            events_received: 0,
            // Taken before the webhook exists, so gap-fill covers everything after it.
            sync_token: self
                .fresh_sync_token(context, client, resource)
                .await
                .unwrap_or_default(),
            last_checked_at_us: None,
            asana_last_failure_at_us: None,
            repaired_at_us: None,
            gap_lost_at_us: None,
        };
        self.events
            .create(&subscription, now + micros(self.health_interval))
            .await?;
        let id = subscription.subscription_id.clone();
        let outcome = self
            .register(context, client, &subscription, Registering::New)
            .await;
        match &outcome {
            Ok(webhook_gid) => {
                subscription.webhook_gid.clone_from(webhook_gid);
                subscription.state = SubscriptionState::Active;
            }
            Err(refused) => {
                subscription.state = SubscriptionState::Failed;
                subscription.failure_reason = refused.to_string();
            }
        }
        let reason = outcome.as_ref().err().map(ToString::to_string);
        self.record_change(
            action::WEBHOOK_SUBSCRIBED,
            &context.caller,
            &subscription,
            reason.as_deref(),
        )
        .await;
        match outcome {
            Ok(_) => Ok(self.events.get(&id).await?.unwrap_or(subscription)),
            Err(Refused::Asana(message)) => Err(Error::AsanaRefused {
                what: "creating the webhook",
                message,
            }),
            Err(Refused::Call(error)) => Err(error),
        }
    }

    /// `asana_webhook_create` through `ExecuteTool`: its checked request's `resource` and
    /// `filters` become an event subscription, whose webhook targets the intake whatever
    /// `target` said; the output is the webhook as Asana describes it, with the subscription
    /// id and without the secret. Asana's refusal is a tool error the model can read.
    pub(crate) async fn subscribe_tool(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        http: &asana_tools::HttpCall,
    ) -> Result<Output, Error> {
        let data = http.data.clone().unwrap_or_default();
        let resource = data["resource"].as_str().unwrap_or_default();
        let filters_json = match &data["filters"] {
            Value::Null => String::new(),
            filters => filters.to_string(),
        };
        let output = |value: Value, is_error: bool| Output {
            output: value.to_string(),
            is_error,
            next_page: None,
            request_id: None,
            pages: 1,
            status: None,
        };
        match self
            .subscribe(context, client, resource, &filters_json)
            .await
        {
            Ok(subscription) => Ok(output(
                json!({
                    "gid": subscription.webhook_gid,
                    "resource_type": "webhook",
                    "resource": {"gid": subscription.resource_gid},
                    "target": format!("{}/webhooks/{}/…", self.public_url, subscription.subscription_id),
                    "active": true,
                    "filters": filters(&subscription.filters_json).ok().flatten(),
                    "subscription_id": subscription.subscription_id,
                    "events": "delivered to agentauth: follow them with SubscribeEvents",
                }),
                false,
            )),
            Err(Error::AsanaRefused { message, .. }) => Ok(output(
                json!({"error": {"errors": [{"message": message}]}}),
                true,
            )),
            Err(error) => Err(error),
        }
    }

    /// Asks Asana for the pending `subscription`'s webhook (its handshake reaches the intake
    /// meanwhile), and records the outcome: ACTIVE with the webhook's gid, or FAILED with
    /// Asana's reason (which is also the error).
    async fn register(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        subscription: &Subscription,
        why: Registering,
    ) -> Result<String, Refused> {
        let id = &subscription.subscription_id;
        let key = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        self.events
            .set_target_key(id, &key_digest(&key))
            .await
            .map_err(Refused::Call)?;
        let mut data =
            json!({"resource": subscription.resource_gid, "target": self.target(id, &key)});
        if let Ok(Some(filters)) = filters(&subscription.filters_json) {
            data["filters"] = filters;
        }
        let body = json!({ "data": data }).to_string().into();
        let answer = self
            .send(
                context,
                client,
                reqwest::Method::POST,
                "/webhooks",
                &[],
                body,
            )
            .await;
        let created = match answer {
            Ok(answer) if answer.status.is_success() => {
                serde_json::from_slice::<Value>(&answer.body)
                    .ok()
                    .and_then(|v| v["data"]["gid"].as_str().map(str::to_owned))
                    .ok_or_else(|| Refused::Asana("Asana's answer names no webhook".to_owned()))
            }
            Ok(answer) => Err(Refused::Asana(asana_message(
                answer.status.as_u16(),
                &answer.body,
            ))),
            Err(error) => Err(Refused::Call(error)),
        };
        let recorded = match (&created, why) {
            (Ok(webhook_gid), _) => {
                match self
                    .events
                    .activate(id, webhook_gid, why == Registering::Repair)
                    .await
                {
                    Ok(true) => Ok(()),
                    // Deleted while its webhook was being created: that webhook goes too.
                    Ok(false) => {
                        let created = Subscription {
                            webhook_gid: webhook_gid.clone(),
                            ..subscription.clone()
                        };
                        if let Some(error) = self.delete_webhook(context, client, &created).await {
                            tracing::warn!(subscription_id = %id, %error, "a webhook of a deleted subscription could not be deleted");
                        }
                        return Err(Refused::Asana(
                            "the subscription was deleted while its webhook was created".to_owned(),
                        ));
                    }
                    Err(error) => Err(error),
                }
            }
            // Asana could not be asked now: a resumed subscription stays paused, a repaired
            // one active (the next check tries again).
            (Err(Refused::Call(_)), Registering::Resume) => {
                self.events.back_to(id, SubscriptionState::Paused).await
            }
            (Err(Refused::Call(_)), Registering::Repair) => {
                self.events.back_to(id, SubscriptionState::Active).await
            }
            (Err(refused), Registering::Repair) => {
                self.events
                    .fail(
                        id,
                        &format!("Asana deleted the webhook, and re-creating it failed: {refused}"),
                    )
                    .await
            }
            (Err(refused), _) => self.events.fail(id, &refused.to_string()).await,
        };
        recorded.map_err(Refused::Call)?;
        created
    }

    /// One request to Asana as the account, through the one call path.
    async fn send(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> Result<asana_client::RawResponse, Error> {
        let mut headers = reqwest::header::HeaderMap::new();
        if !body.is_empty() {
            headers.insert(
                reqwest::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let class = if method == reqwest::Method::GET {
            asana_tools::RateClass::Read
        } else {
            asana_tools::RateClass::Write
        };
        let checked = Checked {
            request: asana_client::RawRequest {
                method,
                path: path.to_owned(),
                query: query
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                headers,
                body,
            },
            class,
        };
        self.executor
            .run_proxy(context, client, &checked, &mut Trail::default())
            .await
    }

    /// A fresh events API position for `resource`: Asana answers a read without one 412 with
    /// a token at the end of its log.
    async fn fresh_sync_token(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        resource: &str,
    ) -> Option<String> {
        let answer = self
            .send(
                context,
                client,
                reqwest::Method::GET,
                "/events",
                &[("resource", resource)],
                Bytes::new(),
            )
            .await
            .ok()?;
        serde_json::from_slice::<Value>(&answer.body)
            .ok()?
            .get("sync")?
            .as_str()
            .map(str::to_owned)
    }

    /// Deletes a subscription: its webhook at Asana as the account (through `client`), its
    /// secret, its state. `false` when it had already ended.
    pub(crate) async fn unsubscribe(
        &self,
        context: &CallContext,
        client: Option<&asana_client::Client>,
        subscription: &Subscription,
    ) -> Result<bool, Error> {
        if subscription.state.ended() {
            return Ok(false);
        }
        let asana_error = match client {
            Some(client) => self.delete_webhook(context, client, subscription).await,
            None => Some("its connection is gone".to_owned()),
        };
        // The secret first: should its deletion fail, the subscription is still there to
        // delete again.
        self.vault
            .clone()
            .delete_webhook_secret(vault_pb::DeleteWebhookSecretRequest {
                tenant: subscription.tenant.clone(),
                subscription_id: subscription.subscription_id.clone(),
            })
            .await
            .map_err(Error::from_token_vault)?;
        self.forget_secret(&subscription.subscription_id);
        let deleted = self.events.delete(&subscription.subscription_id).await?;
        if let Some(error) = &asana_error {
            tracing::warn!(
                subscription_id = %subscription.subscription_id,
                %error,
                "the webhook could not be deleted at Asana; its deliveries are refused"
            );
        }
        self.record_change(
            action::WEBHOOK_UNSUBSCRIBED,
            &context.caller,
            subscription,
            asana_error.as_deref(),
        )
        .await;
        Ok(deleted)
    }

    /// Deletes the subscription's webhook at Asana as the account; Asana's refusal, if any
    /// (a webhook already gone is what was asked).
    async fn delete_webhook(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        subscription: &Subscription,
    ) -> Option<String> {
        if subscription.webhook_gid.is_empty() {
            return None;
        }
        let path = format!("/webhooks/{}", subscription.webhook_gid);
        match self
            .send(
                context,
                client,
                reqwest::Method::DELETE,
                &path,
                &[],
                Bytes::new(),
            )
            .await
        {
            Ok(answer) if answer.status.is_success() || answer.status.as_u16() == 404 => None,
            Ok(answer) => Some(asana_message(answer.status.as_u16(), &answer.body)),
            Err(error) => Some(error.to_string()),
        }
    }

    /// Pauses an ACTIVE subscription: its webhook is deleted at Asana, its events API position
    /// kept. `false` when it was not ACTIVE.
    pub(crate) async fn pause(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        subscription: &Subscription,
    ) -> Result<bool, Error> {
        // Paused first, so no health check takes the deleted webhook for one to repair.
        if subscription.state != SubscriptionState::Active
            || !self.events.pause(&subscription.subscription_id).await?
        {
            return Ok(false);
        }
        if let Some(message) = self.delete_webhook(context, client, subscription).await {
            self.events
                .transition(
                    &subscription.subscription_id,
                    &[SubscriptionState::Paused],
                    SubscriptionState::Active,
                )
                .await?;
            return Err(Error::AsanaRefused {
                what: "deleting the webhook",
                message,
            });
        }
        self.record_change(action::WEBHOOK_PAUSED, &context.caller, subscription, None)
            .await;
        Ok(true)
    }

    /// Resumes a PAUSED subscription: a new webhook (and handshake); what happened meanwhile
    /// is back-filled by the next health checks. `false` when it was not PAUSED.
    pub(crate) async fn resume(
        &self,
        context: &CallContext,
        client: &asana_client::Client,
        subscription: &Subscription,
    ) -> Result<bool, Error> {
        let id = &subscription.subscription_id;
        if subscription.state != SubscriptionState::Paused
            || !self
                .events
                .await_new_webhook(id, SubscriptionState::Paused)
                .await?
        {
            return Ok(false);
        }
        let outcome = self
            .register(context, client, subscription, Registering::Resume)
            .await;
        let reason = outcome.as_ref().err().map(ToString::to_string);
        self.record_change(
            action::WEBHOOK_RESUMED,
            &context.caller,
            subscription,
            reason.as_deref(),
        )
        .await;
        match outcome {
            Ok(_) => Ok(true),
            Err(Refused::Asana(message)) => Err(Error::AsanaRefused {
                what: "creating the webhook again",
                message,
            }),
            Err(Refused::Call(error)) => Err(error),
        }
    }

    async fn record_change(
        &self,
        action_name: &'static str,
        actor: &str,
        subscription: &Subscription,
        error: Option<&str>,
    ) {
        self.executor
            .record_action(
                action_name,
                actor,
                &subscription.tenant,
                Some(&subscription.identifier),
                if error.is_some() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
                &SubscriptionChanged {
                    subscription_id: &subscription.subscription_id,
                    connection: &subscription.connection_name,
                    resource_gid: &subscription.resource_gid,
                    webhook_gid: &subscription.webhook_gid,
                    error,
                },
            )
            .await;
    }

    fn forget_secret(&self, id: &str) {
        self.secrets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    fn remember_secret(&self, id: &str, secret: HookSecret, handshake_at_us: Option<i64>) {
        let mut secrets = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        if secrets.len() >= MAX_CACHED_SECRETS {
            secrets.clear();
        }
        secrets.insert(id.to_owned(), (secret, handshake_at_us));
    }

    /// The subscription's secret, and whether it came from the cache: cached from its current
    /// handshake, or read from token-vault (`fresh`: read it, whatever is cached).
    async fn secret(
        &self,
        subscription: &Subscription,
        fresh: bool,
    ) -> Result<Option<(HookSecret, bool)>, Refusal> {
        let id = &subscription.subscription_id;
        let cached = (!fresh)
            .then(|| {
                self.secrets
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(id)
                    .filter(|(_, handshake)| *handshake == subscription.handshake_at_us)
                    .map(|(secret, _)| secret.clone())
            })
            .flatten();
        if let Some(secret) = cached {
            return Ok(Some((secret, true)));
        }
        let read = self
            .vault
            .clone()
            .get_webhook_secret(vault_pb::GetWebhookSecretRequest {
                tenant: subscription.tenant.clone(),
                subscription_id: id.clone(),
            })
            .await;
        match read {
            Ok(answer) => {
                let secret = HookSecret(Arc::from(answer.into_inner().secret));
                self.remember_secret(id, secret.clone(), subscription.handshake_at_us);
                Ok(Some((secret, false)))
            }
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot read a webhook secret");
                Err(Refusal::Unavailable)
            }
        }
    }

    /// One request to the intake, in its span (the subscription, the answer's status).
    async fn receive(&self, id: &str, key: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let span = tracing::info_span!(
            "webhook.intake",
            subscription_id = %id.chars().take(64).collect::<String>().escape_debug(),
            bytes = body.len(),
            status = tracing::field::Empty,
        );
        let response = self
            .answer(id, key, headers, body)
            .instrument(span.clone())
            .await;
        span.record("status", response.status().as_u16());
        response
    }

    /// A request names its subscription and the key of its current webhook's target; one that
    /// gets either wrong learns nothing (404), leaves no audit row and costs no token-vault
    /// call: only Asana, which alone was given the target, reaches the signature check.
    async fn answer(&self, id: &str, key: &str, headers: &HeaderMap, body: &[u8]) -> Response {
        let found = match uuid::Uuid::parse_str(id) {
            Ok(_) => self.events.get(id).await,
            Err(_) => Ok(None),
        };
        // Digests are compared, so how long it takes tells nothing about the key.
        let subscription = match found {
            Ok(Some(subscription))
                if !subscription.target_key_sha256.is_empty()
                    && subscription.target_key_sha256 == key_digest(key) =>
            {
                subscription
            }
            Ok(_) => return self.refuse(None, id, Refusal::UnknownSubscription).await,
            Err(_) => return self.refuse(None, id, Refusal::Unavailable).await,
        };
        if !subscription.state.receives() {
            return self
                .refuse(Some(&subscription), id, Refusal::UnknownSubscription)
                .await;
        }
        let answered = match headers.get(SECRET_HEADER) {
            Some(secret) => self.handshake(&subscription, secret).await,
            None => self.deliver(&subscription, headers, body).await,
        };
        match answered {
            Ok(response) => response,
            Err(refusal) => self.refuse(Some(&subscription), id, refusal).await,
        }
    }

    /// Takes the handshake of a pending subscription: the secret goes to token-vault, and is
    /// echoed.
    async fn handshake(
        &self,
        subscription: &Subscription,
        secret: &HeaderValue,
    ) -> Result<Response, Refusal> {
        let text = secret
            .to_str()
            .ok()
            .filter(|s| !s.is_empty() && s.len() <= MAX_SECRET)
            .ok_or(Refusal::Malformed(
                "X-Hook-Secret is empty, too long or not text",
            ))?;
        let id = &subscription.subscription_id;
        let taken_at = match self.events.take_handshake(id, self.handshake_window).await {
            Ok(Some(at)) => at,
            Ok(None) => return Err(Refusal::HandshakeRefused),
            Err(_) => return Err(Refusal::Unavailable),
        };
        self.vault
            .clone()
            .put_webhook_secret(vault_pb::PutWebhookSecretRequest {
                tenant: subscription.tenant.clone(),
                subscription_id: id.clone(),
                secret: text.to_owned(),
            })
            .await
            .map_err(|status| {
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot keep a webhook secret");
                Refusal::Unavailable
            })?;
        self.remember_secret(id, HookSecret(Arc::from(text)), Some(taken_at));
        self.metrics.handshake();
        tracing::info!(subscription_id = %id, "webhook handshake taken");
        let mut response = StatusCode::OK.into_response();
        response.headers_mut().insert(SECRET_HEADER, secret.clone());
        Ok(response)
    }

    /// Verifies and stores a delivery.
    async fn deliver(
        &self,
        subscription: &Subscription,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Response, Refusal> {
        let signature = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| hex::decode(v.trim()).ok())
            .ok_or(Refusal::BadSignature)?;
        let signed_with = |secret: &HookSecret| {
            Hmac::<Sha256>::new_from_slice(secret.0.as_bytes()).is_ok_and(|mut mac| {
                mac.update(body);
                mac.verify_slice(&signature).is_ok()
            })
        };
        let (secret, cached) = self
            .secret(subscription, false)
            .await?
            .ok_or(Refusal::BadSignature)?;
        if !signed_with(&secret) {
            // A secret cached from a handshake another replica has since replaced (in the
            // moment between its handshake time and its Vault write) is read once more.
            let renewed = match cached {
                true => self.secret(subscription, true).await?,
                false => None,
            };
            if !renewed.is_some_and(|(secret, _)| signed_with(&secret)) {
                return Err(Refusal::BadSignature);
            }
        }
        let events = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(mut delivery)) => match delivery.remove("events") {
                Some(Value::Array(events)) if events.iter().all(Value::is_object) => events,
                _ => return Err(Refusal::Malformed("`events` must be an array of objects")),
            },
            _ => return Err(Refusal::Malformed("the body must be a JSON object")),
        };
        if events.len() > self.max_events {
            return Err(Refusal::Malformed("too many events in one delivery"));
        }
        if events.is_empty() {
            self.events
                .heartbeat(&subscription.subscription_id)
                .await
                .map_err(|_| Refusal::Unavailable)?;
            self.metrics.heartbeat();
            return Ok(StatusCode::OK.into_response());
        }
        let stored = self
            .events
            .store(subscription, &events, false)
            .await
            .map_err(|_| Refusal::Unavailable)?;
        let received = u64::try_from(events.len()).unwrap_or(u64::MAX);
        self.metrics.delivery(received, stored);
        tracing::debug!(received, stored, "webhook delivery stored");
        Ok(StatusCode::OK.into_response())
    }

    /// Answers a refusal; audited when the subscription (so its tenant) is known, logged
    /// otherwise.
    async fn refuse(
        &self,
        subscription: Option<&Subscription>,
        id: &str,
        refusal: Refusal,
    ) -> Response {
        let reason = refusal.reason();
        self.metrics.refused(refusal.metric());
        match subscription {
            Some(subscription) if !matches!(refusal, Refusal::Unavailable) => {
                self.executor
                    .record_action(
                        action::WEBHOOK_REFUSED,
                        INTAKE_ACTOR,
                        &subscription.tenant,
                        Some(&subscription.identifier),
                        Outcome::Denied,
                        &DeliveryRefused {
                            subscription_id: &subscription.subscription_id,
                            reason,
                        },
                    )
                    .await;
            }
            _ => {
                let shown: String = id.chars().take(64).collect();
                tracing::warn!(subscription_id = %shown.escape_debug(), reason, "webhook request refused");
            }
        }
        (refusal.status(), reason).into_response()
    }
}

/// The intake's routes: `POST /webhooks/{subscription_id}/{key}`, and `GET /metrics`.
pub(crate) fn router(webhooks: Arc<Webhooks>, config: &WebhooksConfig) -> Router {
    Router::new()
        .route("/webhooks/{subscription_id}/{key}", post(receive))
        .route("/metrics", get(metrics))
        .with_state(webhooks)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            config.max_concurrent_requests.max(1),
        ))
}

async fn metrics(State(webhooks): State<Arc<Webhooks>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        webhooks.metrics.render(),
    )
        .into_response()
}

async fn receive(
    State(webhooks): State<Arc<Webhooks>>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    webhooks.receive(&id, &key, &headers, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_an_array_of_objects_or_nothing() {
        assert_eq!(filters("").expect("empty"), None);
        assert!(
            filters(r#"[{"resource_type": "task"}]"#)
                .expect("array")
                .is_some()
        );
        for bad in ["{}", "[1]", "[", "\"x\""] {
            assert!(filters(bad).is_err(), "{bad}");
        }
        assert!(filters(&format!("[{}]", " ".repeat(MAX_FILTERS))).is_err());
    }

    #[test]
    fn resource_gids_are_plain() {
        assert!(resource_gid("1204567890").is_ok());
        for bad in ["", "../x", "a/b", "1 2", &"9".repeat(65)] {
            assert!(resource_gid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_secret_is_never_printed() {
        let secret = HookSecret(Arc::from("b537207f20cbfa02"));
        assert_eq!(format!("{secret:?}"), "[redacted]");
    }
}
