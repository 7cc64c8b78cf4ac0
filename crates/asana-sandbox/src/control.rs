//! The control API under `/_sandbox/`: off unless a control key is configured, and then only
//! for requests that send it as `X-Sandbox-Control-Key`.
//!
//! | Route | Body | Does |
//! |---|---|---|
//! | `GET /_sandbox/stats` | | limit counters, refresh counts, grants, faults; never a token value |
//! | `POST /_sandbox/seed` | `{"objects": [{"resource_type": …, …}]}` | inserts objects under new gids |
//! | `POST /_sandbox/pats` | `{"user": gid, "service_account": bool}` | mints a personal access token |
//! | `POST /_sandbox/apps` | `{"client_id", "client_secret", "name", "kind": "rest"\|"mcp", "redirect_uris"}` | registers (or replaces) an OAuth app |
//! | `POST /_sandbox/grants/expire` | `{"refresh_token"}` or `{"user", "client_id"?}` | expires the grants' access tokens now |
//! | `POST /_sandbox/grants/revoke` | same | revokes the grants and their access tokens |
//! | `PUT /_sandbox/rotation` | `{"enabled": bool}` | refresh-token rotation on or off |
//! | `PUT /_sandbox/limits` | a [`LimitConfig`] | replaces the limits |
//! | `POST /_sandbox/faults` | a [`Fault`] | injects latency, a 5xx or a 429 for a path prefix |
//! | `DELETE /_sandbox/faults` | | removes every fault |
//!
//! Bodies are JSON and read only after the key is checked, so a caller without the key
//! learns nothing from a malformed body.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::tokens::{App, AppKind, token_key};
use crate::{Fault, LimitConfig, Sandbox};

/// The header that carries the control key.
pub const HEADER: &str = "x-sandbox-control-key";

/// Admits a control request: 404 when the control API is off (it does not exist), 401 for a
/// missing or wrong key.
pub fn authorize(sandbox: &Sandbox, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &sandbox.config().control_key else {
        return Err(ApiError::not_found("Not found"));
    };
    let given = headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "control key missing or wrong",
        ))
    }
}

/// Compares secrets without a timing side channel on their content.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The control routes.
pub fn routes(sandbox: Sandbox) -> Router {
    Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/seed", post(seed))
        .route("/_sandbox/pats", post(create_pat))
        .route("/_sandbox/apps", post(register_app))
        .route("/_sandbox/grants/expire", post(expire_grants))
        .route("/_sandbox/grants/revoke", post(revoke_grants))
        .route("/_sandbox/rotation", put(set_rotation))
        .route("/_sandbox/limits", put(set_limits))
        .route("/_sandbox/faults", post(add_fault).delete(clear_faults))
        .with_state(sandbox)
}

/// A JSON body, or 400 naming what is wrong with it.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// `{"data": value}` with `status`.
fn reply(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(json!({ "data": value }))).into_response()
}

/// `GET /_sandbox/stats`.
///
/// - `tokens`: per-token limit counters, keyed by `token_key(token)` (a truncated SHA-256,
///   computable with [`crate::tokens::token_key`]) of the PAT or access token that made the
///   requests.
/// - `refreshes_by_client` and `refreshes_total`: refreshes served at `/-/oauth_token`. They
///   are counted under `token_key(client_id)`, so the count survives refresh-token rotation;
///   that key also appears in `tokens` with its `refreshes`.
/// - `grants`: every OAuth grant keyed by `token_key(current refresh token)`, with its stable
///   `grant` id, app, user, scopes and whether it is revoked.
async fn stats(State(sandbox): State<Sandbox>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let limits = sandbox.0.limits.stats();
    let (refreshes_by_client, grants, rotation, pending_codes) = {
        let tokens = sandbox.tokens();
        let refreshes: Map<String, Value> = tokens
            .apps
            .keys()
            .map(|client_id| {
                let count = limits["tokens"][token_key(client_id)]["refreshes"]
                    .as_u64()
                    .unwrap_or(0);
                (client_id.clone(), json!(count))
            })
            .collect();
        let grants: Map<String, Value> = tokens
            .grants
            .values()
            .map(|g| {
                (
                    token_key(&g.refresh_token),
                    json!({
                        "grant": g.id,
                        "client_id": g.client_id,
                        "user": g.user_gid,
                        "scopes": g.scopes,
                        "revoked": g.revoked,
                    }),
                )
            })
            .collect();
        (refreshes, grants, tokens.rotation, tokens.codes.len())
    };
    let faults: Vec<Value> = crate::lock(&sandbox.0.faults)
        .iter()
        .map(|f| {
            json!({
                "path_prefix": f.path_prefix,
                "latency_ms": f.latency_ms,
                "status": f.status,
                "times": f.times,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "tokens": limits["tokens"],
        "refreshes_total": limits["refreshes_total"],
        "refreshes_by_client": refreshes_by_client,
        "refresh_key": "token_key(client_id)",
        "grants": grants,
        "rotation": rotation,
        "pending_codes": pending_codes,
        "faults": faults,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    objects: Vec<Map<String, Value>>,
}

/// `POST /_sandbox/seed`: inserts each object under a new gid and returns them as stored.
///
/// An object may carry a local `gid` of the caller's choosing; every `{"gid": <local>}` inside
/// the batch is rewritten to the new gid, so one call can seed a project and its tasks.
async fn seed(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let request: SeedRequest = parse(&body)?;
    if let Some(index) = request.objects.iter().position(|o| {
        o.get("resource_type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    }) {
        return Err(ApiError::bad_request(format!(
            "objects[{index}]: resource_type is required"
        )));
    }
    let mut world = sandbox.world();
    let mut local_gids = HashMap::new();
    let mut inserted = Vec::with_capacity(request.objects.len());
    for mut object in request.objects {
        let local = object.remove("gid");
        let stored = world.insert(object);
        let gid = stored["gid"].as_str().unwrap_or_default().to_owned();
        if let Some(Value::String(local)) = local {
            local_gids.insert(local, gid.clone());
        }
        inserted.push(gid);
    }
    let mut objects = Vec::with_capacity(inserted.len());
    for gid in &inserted {
        if let Some(object) = world.get_mut(gid) {
            if !local_gids.is_empty() {
                relink(object, &local_gids);
            }
            objects.push(object.clone());
        }
    }
    Ok(reply(StatusCode::CREATED, Value::Array(objects)))
}

/// Rewrites every nested `"gid": <local>` to its new gid.
fn relink(value: &mut Value, local_gids: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match field {
                    Value::String(text) if key == "gid" => {
                        if let Some(gid) = local_gids.get(text.as_str()) {
                            *text = gid.clone();
                        }
                    }
                    _ => relink(field, local_gids),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| relink(v, local_gids)),
        _ => {}
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatRequest {
    user: String,
    #[serde(default)]
    service_account: bool,
}

/// `POST /_sandbox/pats`: a new personal access (or service-account) token for a user. This
/// is the one control route that returns a secret: handing it to the caller is its purpose.
async fn create_pat(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let request: PatRequest = parse(&body)?;
    if sandbox.world().get_typed(&request.user, "user").is_none() {
        return Err(ApiError::not_found("user: Not a recognized ID"));
    }
    let token = sandbox
        .tokens()
        .add_pat(&request.user, request.service_account);
    Ok(reply(
        StatusCode::CREATED,
        json!({
            "token_key": token_key(&token),
            "token": token,
            "user": request.user,
            "service_account": request.service_account,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Rest,
    Mcp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppRequest {
    client_id: String,
    client_secret: String,
    name: String,
    kind: Kind,
    redirect_uris: Vec<String>,
}

/// `POST /_sandbox/apps`: registers an OAuth app (201), or replaces one with the same
/// `client_id` (200). The secret is not echoed.
async fn register_app(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let request: AppRequest = parse(&body)?;
    if request.client_id.is_empty() || request.client_secret.is_empty() {
        return Err(ApiError::bad_request(
            "client_id and client_secret must not be empty",
        ));
    }
    if request.redirect_uris.is_empty()
        || request
            .redirect_uris
            .iter()
            .any(|uri| reqwest::Url::parse(uri).is_err())
    {
        return Err(ApiError::bad_request(
            "redirect_uris: give at least one absolute URL",
        ));
    }
    let (kind, kind_name) = match request.kind {
        Kind::Rest => (AppKind::Rest, "rest"),
        Kind::Mcp => (AppKind::Mcp, "mcp"),
    };
    let summary = json!({
        "client_id": request.client_id,
        "name": request.name,
        "kind": kind_name,
        "redirect_uris": request.redirect_uris,
    });
    let mut tokens = sandbox.tokens();
    let replaced = tokens.apps.contains_key(&request.client_id);
    tokens.register_app(App {
        client_id: request.client_id,
        client_secret: request.client_secret,
        name: request.name,
        kind,
        redirect_uris: request.redirect_uris,
    });
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(reply(status, summary))
}

/// Which grants a grants route acts on: the one holding `refresh_token`, or every live grant
/// of `user` (for `client_id` only, when given).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantSelector {
    refresh_token: Option<String>,
    user: Option<String>,
    client_id: Option<String>,
}

/// The ids of the live grants `body` selects; 400 for an unusable selector, 404 for none.
fn select_grants(sandbox: &Sandbox, body: &[u8]) -> Result<Vec<u64>, ApiError> {
    let selector: GrantSelector = parse(body)?;
    let tokens = sandbox.tokens();
    let live = tokens.grants.values().filter(|g| !g.revoked);
    let ids: Vec<u64> = match (&selector.refresh_token, &selector.user) {
        (Some(refresh_token), None) if selector.client_id.is_none() => live
            .filter(|g| constant_time_eq(g.refresh_token.as_bytes(), refresh_token.as_bytes()))
            .map(|g| g.id)
            .collect(),
        (None, Some(user)) => live
            .filter(|g| &g.user_gid == user)
            .filter(|g| {
                selector
                    .client_id
                    .as_ref()
                    .is_none_or(|c| &g.client_id == c)
            })
            .map(|g| g.id)
            .collect(),
        _ => {
            return Err(ApiError::bad_request(
                "send {\"refresh_token\": …} or {\"user\": gid, \"client_id\": …}",
            ));
        }
    };
    if ids.is_empty() {
        return Err(ApiError::not_found("no live grant matches"));
    }
    Ok(ids)
}

/// `POST /_sandbox/grants/expire`: the selected grants' access tokens expire now (their
/// refresh tokens still work).
async fn expire_grants(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let ids = select_grants(&sandbox, &body)?;
    let mut tokens = sandbox.tokens();
    for id in &ids {
        tokens.expire_grant(*id);
    }
    Ok(reply(StatusCode::OK, json!({ "grants": ids })))
}

/// `POST /_sandbox/grants/revoke`: the selected grants end, as when a user deauthorizes the
/// app.
async fn revoke_grants(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let ids = select_grants(&sandbox, &body)?;
    let mut tokens = sandbox.tokens();
    for id in &ids {
        tokens.revoke_grant(*id);
    }
    Ok(reply(StatusCode::OK, json!({ "grants": ids })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotationRequest {
    enabled: bool,
}

/// `PUT /_sandbox/rotation`: whether a refresh also replaces the refresh token.
async fn set_rotation(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let request: RotationRequest = parse(&body)?;
    sandbox.tokens().rotation = request.enabled;
    Ok(reply(StatusCode::OK, json!({ "enabled": request.enabled })))
}

/// `PUT /_sandbox/limits`: replaces the limits; omitted fields take Asana's values.
async fn set_limits(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let config: LimitConfig = parse(&body)?;
    let echo = json!({
        "free_per_minute": config.free_per_minute,
        "paid_per_minute": config.paid_per_minute,
        "max_reads_in_flight": config.max_reads_in_flight,
        "max_writes_in_flight": config.max_writes_in_flight,
        "search_per_minute": config.search_per_minute,
    });
    sandbox.0.limits.configure(config);
    Ok(reply(StatusCode::OK, echo))
}

/// `POST /_sandbox/faults`: adds a fault; faults are tried in the order they were added.
async fn add_fault(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let fault: Fault = parse(&body)?;
    if !fault.path_prefix.starts_with('/') {
        return Err(ApiError::bad_request("path_prefix must start with /"));
    }
    if fault
        .status
        .is_some_and(|s| s != 429 && !(500..=599).contains(&s))
    {
        return Err(ApiError::bad_request("status must be 429 or 500-599"));
    }
    if fault.times == Some(0) {
        return Err(ApiError::bad_request(
            "times must be at least 1 (omit it for a lasting fault)",
        ));
    }
    let mut faults = crate::lock(&sandbox.0.faults);
    faults.push(fault);
    Ok(reply(
        StatusCode::CREATED,
        json!({ "faults": faults.len() }),
    ))
}

/// `DELETE /_sandbox/faults`: removes every fault.
async fn clear_faults(
    State(sandbox): State<Sandbox>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&sandbox, &headers)?;
    let mut faults = crate::lock(&sandbox.0.faults);
    let removed = faults.len();
    faults.clear();
    Ok(reply(StatusCode::OK, json!({ "removed": removed })))
}
