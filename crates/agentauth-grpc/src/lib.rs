//! The gRPC chassis shared by the four agentauth services.
//!
//! - [`auth`]: callers present an API key on every RPC; keys are configured only as SHA-256
//!   hashes, each bound to the tenants, connections and tools its caller may use.
//! - [`server`]: one way to serve: health and reflection (which answer without a key), W3C
//!   trace context taken from every request, readiness tied to real dependencies, and one
//!   shutdown sequence.
//! - [`client`]: channels to other services that send this service's key and the current
//!   trace context on every call.

pub mod auth;
pub mod client;
pub mod server;
mod trace;

pub use auth::{ApiKey, Caller, CallerConfig, Denied};
pub use server::{AlwaysReady, Api, Readiness, Server, ServerConfig, shutdown_signal};

/// `; did you mean `a` or `b`?` for an error message about an unknown name, or nothing when
/// there is no close name.
pub fn did_you_mean(suggestions: &[String]) -> String {
    match suggestions {
        [] => String::new(),
        names => format!(
            "; did you mean {}?",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}
