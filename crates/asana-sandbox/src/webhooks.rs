//! Webhooks: `POST /webhooks` with the handshake, signed deliveries, retries, heartbeats.
//!
//! # State
//!
//! A webhook is an object in the [`World`] with `resource_type: "webhook"`, holding
//! exactly the fields Asana returns plus internal ones that `public` strips before anything
//! leaves the sandbox (so `opt_fields` cannot reach them either):
//!
//! - `_sandbox_secret`: the `X-Hook-Secret` sent at the handshake, which signs every delivery;
//! - `_sandbox_user`, `_sandbox_app`: who owns it (Asana scopes listing to user + app);
//! - `_sandbox_workspace`: the watched resource's workspace, for `GET /webhooks?workspace=`;
//! - `_sandbox_cursor`: the change-log position up to which events have been delivered.
//!
//! Keeping webhooks in the world rather than in a registry of this module means they share
//! gids, locking and lifetime with everything else, and the control API can see them.
//!
//! # Delivery
//!
//! [`start_delivery`] spawns a supervisor that, whenever the world changes, starts one worker
//! per webhook that has none. A worker delivers the changes after its cursor whose `scope`
//! contains the watched resource and that pass the filters, at most
//! [`MAX_EVENTS_PER_DELIVERY`] per POST, in log order; the cursor moves only when the target
//! answers 2xx, so a failed batch is retried (with exponential backoff from [`RETRY_BASE`],
//! capped at [`RETRY_CAP`]) and later events wait behind it. A webhook that keeps failing for
//! `Config::webhook_failure_window` is deleted; an empty, signed heartbeat goes out every
//! `Config::webhook_heartbeat`. Filters are applied when a batch is sent, so `PUT` also affects
//! events not yet delivered.
//!
//! # Deviations from Asana
//!
//! - Loopback targets (`localhost`, `127.0.0.0/8`, `[::1]`) are accepted like any other host:
//!   Asana answers 403, but everything around the sandbox runs locally. Nothing turns this off.
//! - Deliveries go straight to the target (no proxy, no redirects) and, since the workspace
//!   builds `reqwest` without TLS, only to `http` targets; an `https` target fails its handshake.
//! - Events are kept until delivered rather than dropped after a while, so a recovering target
//!   receives everything it missed (Asana delivers at most once and may lose events).
//! - The retry backoff is a constant here, far shorter than Asana's, so tests see retries.
//! - A new webhook is `active: true` and its `last_success_at` is the handshake (Asana's docs
//!   example shows `false` and `null`; the handshake is the first heartbeat, which counts).
//! - Granular OAuth scopes (`webhooks:read|write|delete`) are not enforced, like everywhere
//!   else in the sandbox so far.
//! - The 1,000-per-resource and 10,000-per-user-and-app limits answer 403 (Asana's status for
//!   them is not documented), and `/events` streams do not count towards them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{SecondsFormat, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::rest::{BASE, Caller, INTERNAL, Params, body_data, data, page, shape};
use crate::tokens::CredentialKind;
use crate::world::World;
use crate::{Principal, Sandbox};

/// The handshake header, and the top-level field of the 201 that repeats it.
pub const SECRET_HEADER: &str = "X-Hook-Secret";
/// The header carrying the lowercase hex HMAC-SHA256 of a delivery's raw body.
pub const SIGNATURE_HEADER: &str = "X-Hook-Signature";
/// How long the target has to answer a handshake or a delivery.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry's delay; each further retry doubles it.
pub const RETRY_BASE: Duration = Duration::from_millis(100);
/// The longest delay between two retries.
pub const RETRY_CAP: Duration = Duration::from_secs(30);
/// The most events one delivery carries.
pub const MAX_EVENTS_PER_DELIVERY: usize = 100;
/// Webhooks per resource, across all users and apps.
pub const MAX_PER_RESOURCE: usize = 1_000;
/// Webhooks per user per app.
pub const MAX_PER_USER_APP: usize = 10_000;

/// What the handshake sends, and what a heartbeat carries.
const EMPTY_EVENTS: &str = r#"{"events":[]}"#;

/// Resource types a webhook may watch.
const WATCHABLE: [&str; 8] = [
    "workspace",
    "team",
    "portfolio",
    "project",
    "section",
    "task",
    "tag",
    "goal",
];

/// Resource types whose webhooks need filters, refuse `fields`, and never see task or story events.
const HIGHER_LEVEL: [&str; 3] = ["workspace", "team", "portfolio"];

/// Event actions a filter may name.
const ACTIONS: [&str; 5] = ["added", "changed", "removed", "deleted", "undeleted"];

/// Asana's message when the target does not complete the handshake.
const HANDSHAKE_FAILED: &str = "Could not complete activation handshake with target URL. Please ensure that the receiving server is accepting connections and supports SSL";

/// Routes outside `/api/1.0` (none).
pub fn routes(_sandbox: Sandbox) -> Router {
    Router::new()
}

/// Routes under `/api/1.0`, behind the REST middleware.
pub fn rest_routes() -> Router<Sandbox> {
    Router::new()
        .route("/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/webhooks/{webhook_gid}",
            get(get_webhook).put(update_webhook).delete(delete_webhook),
        )
}

/// A webhook secret; `Debug` never shows it.
#[derive(Clone)]
struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The lowercase hex HMAC-SHA256 of `body` keyed by `secret`: what `X-Hook-Signature` carries.
pub fn signature(secret: &str, body: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length, so this arm is never reached.
        Err(_) => String::new(),
    }
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The wall-clock time of a future `instant`, as Asana prints timestamps.
fn instant_text(instant: Instant) -> String {
    let ahead = instant.saturating_duration_since(Instant::now());
    (Utc::now() + TimeDelta::from_std(ahead).unwrap_or(TimeDelta::zero()))
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The app half of a webhook's owner: the OAuth client, or the kind of personal token.
fn owner_app(principal: &Principal) -> String {
    match &principal.credential {
        CredentialKind::OAuth { client_id, .. } => client_id.clone(),
        CredentialKind::Pat => "personal_access_token".to_owned(),
        CredentialKind::ServiceAccount => "service_account".to_owned(),
    }
}

fn owned_by(webhook: &Value, user_gid: &str, app: &str) -> bool {
    webhook["_sandbox_user"] == user_gid && webhook["_sandbox_app"] == app
}

/// A webhook as Asana returns it: every internal field removed.
fn public(webhook: &Value) -> Value {
    let mut view = webhook.clone();
    if let Some(map) = view.as_object_mut() {
        map.retain(|key, _| !key.starts_with(INTERNAL));
    }
    view
}

/// The compact webhook that lists return.
fn compact_webhook(webhook: &Value) -> Value {
    let mut out = Map::new();
    for key in ["gid", "resource_type", "active", "resource", "target"] {
        if let Some(value) = webhook.get(key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// The workspace an object lives in: its own `workspace` (a team's `organization`), or that of
/// what it hangs off (a section's project, a story's target, a subtask's parent). This is the
/// rule `rest` applies too.
fn workspace_of(world: &World, object: &Value, depth: u8) -> Option<String> {
    if object["resource_type"] == "workspace" {
        return object["gid"].as_str().map(str::to_owned);
    }
    if let Some(gid) = ["workspace", "organization"]
        .iter()
        .find_map(|key| object[*key]["gid"].as_str())
    {
        return Some(gid.to_owned());
    }
    if depth >= 4 {
        return None;
    }
    ["project", "target", "parent", "task"]
        .iter()
        .filter_map(|key| world.get(object[*key]["gid"].as_str()?))
        .find_map(|owner| workspace_of(world, owner, depth + 1))
}

/// The object `gid` and its workspace gid, if it exists and lives in one of `caller`'s
/// workspaces (the sandbox's visibility rule); otherwise Asana's 404, which does not reveal
/// objects the caller cannot see.
pub(crate) fn visible_resource(
    sandbox: &Sandbox,
    caller: &Principal,
    gid: &str,
) -> Result<(Value, String), ApiError> {
    let not_found = || ApiError::not_found("resource: Not a recognized ID");
    let world = sandbox.world();
    let object = world
        .get(gid)
        .filter(|o| o["resource_type"] != "webhook")
        .ok_or_else(not_found)?;
    let workspace = workspace_of(&world, object, 0).ok_or_else(not_found)?;
    let member = world
        .get_typed(&caller.user_gid, "user")
        .and_then(|u| u["workspaces"].as_array())
        .is_some_and(|ws| ws.iter().any(|w| w["gid"] == workspace.as_str()));
    if !member {
        return Err(not_found());
    }
    Ok((object.clone(), workspace))
}

/// A JSON request body, or Asana's 400.
fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|_| ApiError::bad_request("Could not parse request data, invalid JSON"))
}

/// `target` if it is an absolute http(s) URL with a host.
fn valid_target(target: &str) -> Result<(), ApiError> {
    let invalid = || ApiError::bad_request("target: Not a valid URL");
    let url = reqwest::Url::parse(target).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(())
}

/// Validates `filters` for a webhook on a `resource_type`, keeping only the known keys.
fn valid_filters(filters: Option<&Value>, resource_type: &str) -> Result<Vec<Value>, ApiError> {
    let higher_level = HIGHER_LEVEL.contains(&resource_type);
    let items = match filters {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Err(ApiError::bad_request("filters: Value is not an array")),
    };
    let mut valid = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(filter) = item else {
            return Err(ApiError::bad_request(
                "filters: Each filter must be an object",
            ));
        };
        for (key, value) in &filter {
            let ok = match key.as_str() {
                "resource_type" | "resource_subtype" => value.is_string(),
                "action" => value.as_str().is_some_and(|a| ACTIONS.contains(&a)),
                "fields" if higher_level => {
                    return Err(ApiError::bad_request(
                        "filters: fields are not supported on webhooks on workspaces, teams and portfolios",
                    ));
                }
                "fields" => value
                    .as_array()
                    .is_some_and(|fields| fields.iter().all(Value::is_string)),
                _ => false,
            };
            if !ok {
                return Err(ApiError::bad_request(format!(
                    "filters: Invalid value for {key}"
                )));
            }
        }
        valid.push(Value::Object(filter));
    }
    if higher_level && valid.is_empty() {
        return Err(ApiError::bad_request(
            "filters: Webhooks on workspaces, teams and portfolios require filters",
        ));
    }
    Ok(valid)
}

/// Whether an event passes one filter: every key it names matches.
fn matches_filter(event: &Value, filter: &Value) -> bool {
    let same = |key: &str, actual: &Value| filter.get(key).is_none_or(|wanted| wanted == actual);
    same("resource_type", &event["resource"]["resource_type"])
        && same("resource_subtype", &event["resource"]["resource_subtype"])
        && same("action", &event["action"])
        && filter
            .get("fields")
            .and_then(Value::as_array)
            .is_none_or(|fields| {
                event["action"] == "changed" && fields.contains(&event["change"]["field"])
            })
}

/// Whether a webhook with `filters` on a resource of `resource_type` delivers `event`.
fn passes(event: &Value, filters: &[Value], resource_type: &str) -> bool {
    if HIGHER_LEVEL.contains(&resource_type)
        && matches!(
            event["resource"]["resource_type"].as_str(),
            Some("task" | "story")
        )
    {
        return false;
    }
    filters.is_empty() || filters.iter().any(|f| matches_filter(event, f))
}

/// A fresh 64-hex-digit secret.
fn new_secret() -> Result<Secret, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|_| ApiError::server_error())?;
    Ok(Secret(hex::encode(bytes)))
}

/// The HTTP client for handshakes and deliveries.
fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
}

/// POSTs the handshake to `target`; it must answer 200 or 204 and echo the secret.
async fn handshake(target: &str, secret: &Secret) -> Result<(), ApiError> {
    let client = client().map_err(|_| ApiError::server_error())?;
    let response = client
        .post(target)
        .header(SECRET_HEADER, &secret.0)
        .header(header::CONTENT_TYPE, "application/json")
        .body(EMPTY_EVENTS)
        .send()
        .await;
    let acknowledged = response.is_ok_and(|r| {
        matches!(r.status(), StatusCode::OK | StatusCode::NO_CONTENT)
            && r.headers()
                .get(SECRET_HEADER)
                .is_some_and(|echo| echo.as_bytes() == secret.0.as_bytes())
    });
    if acknowledged {
        Ok(())
    } else {
        Err(ApiError::bad_request(HANDSHAKE_FAILED))
    }
}

async fn create_webhook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let input = body_data(&body)?;
    let resource_gid = input
        .get("resource")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| ApiError::bad_request("resource: Missing input"))?;
    let target = input
        .get("target")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("target: Missing input"))?;
    valid_target(target)?;
    let (resource, workspace) = visible_resource(&sandbox, &caller, resource_gid)?;
    let resource_type = resource["resource_type"].as_str().unwrap_or_default();
    if !WATCHABLE.contains(&resource_type) {
        return Err(ApiError::bad_request(format!(
            "resource: Webhooks are not supported on {resource_type} resources"
        )));
    }
    let filters = valid_filters(input.get("filters"), resource_type)?;
    let app = owner_app(&caller);
    {
        let world = sandbox.world();
        if world
            .all("webhook", |w| w["resource"]["gid"] == resource_gid)
            .count()
            >= MAX_PER_RESOURCE
        {
            return Err(ApiError::forbidden(
                "resource: This resource has reached the limit of 1000 webhooks",
            ));
        }
        if world
            .all("webhook", |w| owned_by(w, &caller.user_gid, &app))
            .count()
            >= MAX_PER_USER_APP
        {
            return Err(ApiError::forbidden(
                "You have reached the limit of 10000 webhooks for this app",
            ));
        }
    }

    let secret = new_secret()?;
    handshake(target, &secret).await?;

    let webhook = {
        let mut world = sandbox.world();
        let now = now_text();
        let cursor = world.last_seq();
        let object = json!({
            "resource_type": "webhook",
            "resource": {
                "gid": resource_gid,
                "resource_type": resource_type,
                "name": resource["name"],
            },
            "target": target,
            "active": true,
            "created_at": now,
            "last_success_at": now,
            "last_failure_at": null,
            "last_failure_content": null,
            "delivery_retry_count": 0,
            "next_attempt_after": null,
            "failure_deletion_timestamp": null,
            "filters": filters,
            "_sandbox_secret": secret.0,
            "_sandbox_user": caller.user_gid,
            "_sandbox_app": app,
            "_sandbox_workspace": workspace,
            "_sandbox_cursor": cursor,
        });
        world.insert(object.as_object().cloned().unwrap_or_default())
    };
    // Wakes the delivery supervisor so the new webhook gets its worker.
    sandbox.notify_changed();

    let view = shape(&public(&webhook), &params, Value::clone);
    let location = format!(
        "{}{BASE}/webhooks/{}",
        sandbox.config().public_url,
        webhook["gid"].as_str().unwrap_or_default()
    );
    let mut response = (
        StatusCode::CREATED,
        axum::Json(json!({"data": view, SECRET_HEADER: secret.0})),
    )
        .into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn list_webhooks(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let workspace = params
        .get("workspace")
        .filter(|w| !w.is_empty())
        .ok_or_else(|| ApiError::bad_request("workspace: Missing input"))?;
    let resource = params.get("resource").filter(|r| !r.is_empty());
    let app = owner_app(&caller);
    let items: Vec<Value> = sandbox
        .world()
        .all("webhook", |w| {
            owned_by(w, &caller.user_gid, &app)
                && w["_sandbox_workspace"] == workspace.as_str()
                && resource.is_none_or(|r| w["resource"]["gid"] == r.as_str())
        })
        .map(|w| shape(&public(w), &params, compact_webhook))
        .collect();
    page(&sandbox, items, &params, "/webhooks")
}

/// The caller's own webhook `gid`, or 404.
fn own_webhook(sandbox: &Sandbox, caller: &Principal, gid: &str) -> Result<Value, ApiError> {
    let app = owner_app(caller);
    sandbox
        .world()
        .get_typed(gid, "webhook")
        .filter(|w| owned_by(w, &caller.user_gid, &app))
        .cloned()
        .ok_or_else(|| ApiError::not_found("webhook: Not a recognized ID"))
}

async fn get_webhook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let webhook = own_webhook(&sandbox, &caller, &gid)?;
    Ok(data(shape(&public(&webhook), &params, Value::clone)))
}

async fn update_webhook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(gid): Path<String>,
    Query(params): Query<Params>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body = json_body(&body)?;
    let input = body_data(&body)?;
    let webhook = own_webhook(&sandbox, &caller, &gid)?;
    let filters = input
        .get("filters")
        .ok_or_else(|| ApiError::bad_request("filters: Missing input"))?;
    let filters = valid_filters(
        Some(filters),
        webhook["resource"]["resource_type"]
            .as_str()
            .unwrap_or_default(),
    )?;
    let updated = {
        let mut world = sandbox.world();
        let stored = world
            .get_mut(&gid)
            .ok_or_else(|| ApiError::not_found("webhook: Not a recognized ID"))?;
        stored["filters"] = Value::Array(filters);
        stored.clone()
    };
    Ok(data(shape(&public(&updated), &params, Value::clone)))
}

async fn delete_webhook(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(gid): Path<String>,
) -> Result<Response, ApiError> {
    own_webhook(&sandbox, &caller, &gid)?;
    sandbox.world().remove(&gid);
    // Wakes the webhook's worker so it notices and stops.
    sandbox.notify_changed();
    Ok(data(json!({})))
}

/// Starts delivering changes to webhooks until the sandbox shuts down.
pub fn start_delivery(sandbox: Sandbox) {
    tokio::spawn(supervise(sandbox));
}

/// Starts a worker for every webhook that has none, whenever the world changes.
async fn supervise(sandbox: Sandbox) {
    let client = match client() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhook delivery cannot start");
            return;
        }
    };
    let shutdown = sandbox.0.shutdown.clone();
    let mut changed = sandbox.0.changed.subscribe();
    let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        workers.retain(|_, worker| !worker.is_finished());
        let gids: Vec<String> = sandbox
            .world()
            .all("webhook", |_| true)
            .filter_map(|w| w["gid"].as_str().map(str::to_owned))
            .collect();
        for gid in gids {
            if let Entry::Vacant(slot) = workers.entry(gid) {
                let worker = Worker::new(sandbox.clone(), slot.key().clone(), client.clone());
                slot.insert(tokio::spawn(worker.run()));
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = changed.recv() => {
                if matches!(received, Err(RecvError::Closed)) {
                    return;
                }
            }
        }
    }
}

/// What a webhook has to send next.
#[derive(Debug)]
struct Pending {
    target: String,
    secret: Secret,
    /// Matching events after the cursor, oldest first (empty: a heartbeat).
    events: Vec<Value>,
    /// Where the cursor goes once these are delivered.
    upto: u64,
}

/// A webhook that keeps failing.
#[derive(Debug)]
struct Failing {
    /// When it is deleted unless a delivery succeeds first.
    deadline: Instant,
    retries: u32,
    next_attempt: Instant,
}

/// Delivers one webhook's events in order, with retries and heartbeats.
struct Worker {
    sandbox: Sandbox,
    gid: String,
    client: reqwest::Client,
    changed: tokio::sync::broadcast::Receiver<u64>,
    heartbeat: Duration,
    next_heartbeat: Instant,
    failing: Option<Failing>,
}

impl Worker {
    fn new(sandbox: Sandbox, gid: String, client: reqwest::Client) -> Self {
        let changed = sandbox.0.changed.subscribe();
        // A zero interval would spin; the handshake counts as the first heartbeat.
        let heartbeat = sandbox
            .config()
            .webhook_heartbeat
            .max(Duration::from_millis(10));
        Self {
            sandbox,
            gid,
            client,
            changed,
            heartbeat,
            next_heartbeat: Instant::now() + heartbeat,
            failing: None,
        }
    }

    async fn run(mut self) {
        let shutdown = self.sandbox.0.shutdown.clone();
        loop {
            let Some(pending) = self.pending() else {
                return;
            };
            let now = Instant::now();
            let due = match &self.failing {
                Some(failing) => failing.next_attempt,
                None if !pending.events.is_empty() => now,
                None => self.next_heartbeat,
            };
            if due > now {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(due) => {}
                    received = self.changed.recv() => {
                        if matches!(received, Err(RecvError::Closed)) {
                            return;
                        }
                    }
                }
                continue;
            }
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.deliver(&pending) => outcome,
            };
            if pending.events.is_empty() {
                self.next_heartbeat = Instant::now() + self.heartbeat;
            }
            match outcome {
                Ok(()) => self.succeeded(pending.upto),
                Err(content) => {
                    if !self.failed(content) {
                        return;
                    }
                }
            }
        }
    }

    /// The next batch, or `None` once the webhook is gone.
    fn pending(&self) -> Option<Pending> {
        let mut world = self.sandbox.world();
        let webhook = world.get_typed(&self.gid, "webhook")?;
        let resource = webhook["resource"]["gid"].as_str()?;
        let resource_type = webhook["resource"]["resource_type"]
            .as_str()
            .unwrap_or_default();
        let filters = webhook["filters"].as_array().map_or(&[][..], Vec::as_slice);
        let cursor = webhook["_sandbox_cursor"].as_u64().unwrap_or(0);
        let mut events = Vec::new();
        let mut upto = world.last_seq();
        for change in world.changes_since(cursor, resource) {
            if !passes(&change.event, filters, resource_type) {
                continue;
            }
            events.push(change.event.clone());
            if events.len() == MAX_EVENTS_PER_DELIVERY {
                upto = change.seq;
                break;
            }
        }
        let pending = Pending {
            target: webhook["target"].as_str()?.to_owned(),
            secret: Secret(webhook["_sandbox_secret"].as_str()?.to_owned()),
            events,
            upto,
        };
        // When nothing in between concerns this webhook, skip it for good.
        if pending.events.is_empty()
            && upto > cursor
            && let Some(webhook) = world.get_mut(&self.gid)
        {
            webhook["_sandbox_cursor"] = json!(upto);
        }
        Some(pending)
    }

    /// POSTs `{"events": [...]}`, signed; `Err` carries what Asana shows as
    /// `last_failure_content`.
    async fn deliver(&self, pending: &Pending) -> Result<(), String> {
        let body = serde_json::to_vec(&json!({ "events": pending.events }))
            .map_err(|error| format!("could not encode the events: {error}"))?;
        let signed = signature(&pending.secret.0, &body);
        let response = self
            .client
            .post(&pending.target)
            .header(header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signed)
            .body(body)
            .send()
            .await;
        match response {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status();
                let text = response.bytes().await.unwrap_or_default();
                let text: String = String::from_utf8_lossy(&text).chars().take(1000).collect();
                Err(format!("{status}\n\n{text}"))
            }
            Err(error) if error.is_timeout() => Err(format!(
                "Timed out after {} seconds",
                DELIVERY_TIMEOUT.as_secs()
            )),
            Err(_) => Err("Could not connect to the target".to_owned()),
        }
    }

    /// Moves the cursor past what was delivered and clears the failure state.
    fn succeeded(&mut self, upto: u64) {
        self.failing = None;
        let mut world = self.sandbox.world();
        if let Some(webhook) = world.get_mut(&self.gid) {
            let cursor = webhook["_sandbox_cursor"].as_u64().unwrap_or(0);
            webhook["_sandbox_cursor"] = json!(cursor.max(upto));
            webhook["last_success_at"] = json!(now_text());
            webhook["delivery_retry_count"] = json!(0);
            webhook["next_attempt_after"] = Value::Null;
            webhook["failure_deletion_timestamp"] = Value::Null;
        }
    }

    /// Schedules a retry, or deletes the webhook once it has failed for the whole window;
    /// returns whether the webhook still exists.
    fn failed(&mut self, content: String) -> bool {
        let now = Instant::now();
        let window = self.sandbox.config().webhook_failure_window;
        let failing = self.failing.get_or_insert_with(|| Failing {
            deadline: now + window,
            retries: 0,
            next_attempt: now,
        });
        let mut world = self.sandbox.world();
        if now >= failing.deadline {
            world.remove(&self.gid);
            tracing::info!(webhook = %self.gid, "webhook deleted after failing for the whole failure window");
            return false;
        }
        failing.retries += 1;
        let backoff = RETRY_BASE
            .saturating_mul(1 << (failing.retries - 1).min(20))
            .min(RETRY_CAP);
        failing.next_attempt = (now + backoff).min(failing.deadline);
        tracing::debug!(webhook = %self.gid, retries = failing.retries, "webhook delivery failed");
        let Some(webhook) = world.get_mut(&self.gid) else {
            return false;
        };
        webhook["last_failure_at"] = json!(now_text());
        webhook["last_failure_content"] = json!(content);
        webhook["delivery_retry_count"] = json!(failing.retries);
        webhook["next_attempt_after"] = json!(instant_text(failing.next_attempt));
        webhook["failure_deletion_timestamp"] = json!(instant_text(failing.deadline));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(resource_type: &str, subtype: Option<&str>, action: &str, field: &str) -> Value {
        let mut resource = json!({"gid": "1", "resource_type": resource_type});
        if let Some(subtype) = subtype {
            resource["resource_subtype"] = json!(subtype);
        }
        json!({"resource": resource, "action": action, "change": {"field": field, "action": "changed"}})
    }

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_event_passes_when_any_filter_matches_every_key_it_names() {
        let filters = vec![
            json!({"resource_type": "task", "action": "changed", "fields": ["completed"]}),
            json!({"resource_type": "task", "resource_subtype": "milestone", "action": "added"}),
        ];
        let task = |action, field| event("task", Some("default_task"), action, field);
        assert!(passes(&task("changed", "completed"), &filters, "project"));
        assert!(!passes(&task("changed", "name"), &filters, "project"));
        assert!(!passes(&task("added", "name"), &filters, "project"));
        assert!(passes(
            &event("task", Some("milestone"), "added", ""),
            &filters,
            "project"
        ));
        assert!(passes(&task("deleted", ""), &[], "project"));
    }

    #[test]
    fn task_and_story_events_do_not_reach_higher_level_webhooks() {
        let filters = vec![json!({"action": "changed"})];
        assert!(!passes(
            &event("task", None, "changed", "name"),
            &filters,
            "workspace"
        ));
        assert!(passes(
            &event("project", None, "changed", "name"),
            &filters,
            "workspace"
        ));
    }

    #[test]
    fn higher_level_webhooks_need_filters_without_fields() {
        assert!(valid_filters(None, "team").is_err());
        assert!(
            valid_filters(
                Some(&json!([{"action": "changed", "fields": ["name"]}])),
                "workspace"
            )
            .is_err()
        );
        assert!(valid_filters(Some(&json!([{"resource_type": "project"}])), "portfolio").is_ok());
        assert!(valid_filters(None, "project").is_ok());
        assert!(valid_filters(Some(&json!([{"action": "exploded"}])), "project").is_err());
        assert!(valid_filters(Some(&json!([{"colour": "red"}])), "project").is_err());
    }

    #[test]
    fn targets_must_be_http_urls_and_loopback_is_allowed() {
        assert!(valid_target("http://127.0.0.1:9/hook?state=1").is_ok());
        assert!(valid_target("http://localhost/hook").is_ok());
        assert!(valid_target("https://example.com/hook").is_ok());
        assert!(valid_target("not a url").is_err());
        assert!(valid_target("ftp://example.com/hook").is_err());
        assert!(valid_target("/relative").is_err());
    }
}
