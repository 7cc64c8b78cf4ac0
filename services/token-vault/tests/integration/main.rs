//! token-vault against OpenBao, PostgreSQL or SQLite, the Asana sandbox and a browser.
//! One test binary for the crate, so its tests share one build and one link.

#[path = "../support/vault.rs"]
#[allow(dead_code, reason = "each module uses part of it")]
mod support;

use support::{db, secrets};

mod chromium;
mod cli;
mod oauth;
mod outage;
mod refresh;
mod rotation;
mod suite;
mod vault_auth;
