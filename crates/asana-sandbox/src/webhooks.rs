//! Webhooks: `POST /webhooks` with the handshake, signed deliveries, retries, heartbeats.
//!
//! Not yet built.

use axum::Router;

use crate::Sandbox;

/// Routes outside `/api/1.0` (none).
pub fn routes(_sandbox: Sandbox) -> Router {
    Router::new()
}

/// Routes under `/api/1.0`, behind the REST middleware.
pub fn rest_routes() -> Router<Sandbox> {
    Router::new()
}

/// Starts delivering changes to webhooks.
pub fn start_delivery(_sandbox: Sandbox) {}
