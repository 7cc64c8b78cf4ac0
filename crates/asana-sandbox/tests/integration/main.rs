//! The sandbox served over HTTP: REST, OAuth, webhooks, events, MCP, control, the spec.
//! One test binary for the crate, so its tests share one build and one link.

mod control;
mod events;
mod mcp;
mod oauth;
mod rest;
mod spec;
mod webhooks;
