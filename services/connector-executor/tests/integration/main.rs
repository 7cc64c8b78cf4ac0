//! connector-executor against the whole system: tool calls, limits, MCP peers.
//! One test binary for the crate, so its tests share one build and one link.

mod drift;
mod execute;
mod limits;
mod metrics;
mod peers;
#[path = "../support/system.rs"]
mod system;
mod virtual_mcp;
mod webhooks;
