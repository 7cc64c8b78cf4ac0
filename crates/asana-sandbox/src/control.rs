//! The control API under `/_sandbox/`: off unless a control key is configured, and then only
//! for requests that send it as `X-Sandbox-Control-Key`.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};

use crate::Sandbox;
use crate::error::ApiError;

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
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "control key missing or wrong"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The control routes.
pub fn routes(_sandbox: Sandbox) -> Router {
    Router::new()
}
