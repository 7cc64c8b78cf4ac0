//! Not yet built: see the sandbox issue's note.

use axum::Router;

use crate::Sandbox;

/// This module's routes.
pub fn routes(_sandbox: Sandbox) -> Router {
    Router::new()
}
