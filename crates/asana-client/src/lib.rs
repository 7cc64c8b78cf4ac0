//! A typed client for Asana's REST API.
//!
//! - Every call takes the caller's bearer [`Token`]; the client holds no credential, and a token
//!   never reaches a log, span or error.
//! - Paths are relative to the configured API base; absolute URLs and `.`/`..` segments are
//!   refused before anything is sent ([`Error::InvalidRequest`]).
//! - Asana's `{"data": …}` envelope is unwrapped into [`Response`], which also carries
//!   `next_page`, the `Asana-Change` headers and the `X-Request-Id`; [`Pages`] follows
//!   `next_page` up to a bound.
//! - Asana's error envelope becomes a typed [`Error`].
//! - Only requests that are safe to repeat are retried: GET, and a PUT the caller marked
//!   [`Request::idempotent`]. A 429 waits out `Retry-After` (with jitter) while the retry budget
//!   allows; 500/502/503/504, connection errors and timeouts back off exponentially with jitter.
//!   A POST or DELETE is never retried: a timed-out create may have succeeded.
//!
//! HTTPS (Asana itself) goes through rustls; plain HTTP is for the sandbox.

mod client;
mod config;
mod error;
mod raw;
mod request;

pub use client::{Client, Pages};
pub use config::Config;
pub use error::{Error, ErrorDetail};
pub use raw::{RawRequest, RawResponse};
pub use request::{AsanaChange, NextPage, Request, Response, Token, check_path};
