//! The gRPC chassis shared by the four agentauth services.
//!
//! - [`auth`]: callers present an API key on every RPC; keys are configured only as SHA-256
//!   hashes, each bound to the roles and RPCs (see [`policy`]) and to the tenants,
//!   connections and tools its caller may use.
//! - [`policy`]: each service's RPCs and named roles; one layer in front of every handler
//!   admits an RPC only to a caller granted it (default deny).
//! - [`server`]: one way to serve: health and reflection (which answer without a key), W3C
//!   trace context taken from every request, readiness tied to real dependencies, and one
//!   shutdown sequence.
//! - [`client`]: channels to other services that send this service's key and the current
//!   trace context on every call.

pub mod auth;
mod authorize;
pub mod client;
pub mod policy;
pub mod server;
mod trace;

pub use auth::{Access, ApiKey, Caller, CallerConfig, Denied};
pub use policy::{Policy, Role};
pub use server::{AlwaysReady, Api, Readiness, Server, ServerConfig, shutdown_signal};
pub use trace::current_trace_id;

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

/// The names of `known` within a small edit distance of `name` (case-insensitive), closest
/// first, at most `max`: what an error about an unknown name suggests.
pub fn close_names<'a>(
    name: &str,
    known: impl IntoIterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let wanted = name.to_lowercase();
    let mut scored: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (strsim::levenshtein(&wanted, &k.to_lowercase()), k))
        .filter(|(distance, k)| *distance <= (k.len() / 3).max(2))
        .collect();
    scored.sort_unstable();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(max)
        .map(|(_, k)| k.to_owned())
        .collect()
}
