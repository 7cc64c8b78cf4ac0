//! The tool catalogue for Asana REST connections: what an LLM can call, each tool's input JSON
//! Schema, validation of an input with violations that name their field, and binding a valid
//! input into one Asana REST request ([`HttpCall`]).
//!
//! There are two kinds of tools ([`Source`]):
//!
//! - curated tools (`asana_task_create`, ...), hand-written with flat LLM-friendly schemas;
//! - generated tools (`asana_api_get_task`, ...), one per operation of Asana's official OpenAPI
//!   spec, `crates/asana-sandbox/spec/asana_oas.yaml` (provenance in its `SOURCE.md`). They are
//!   checked in as `generated/rest_tools.json` and embedded; after replacing the spec,
//!   regenerate them with `cargo run -p asana-tools --bin asana-tools-generate`
//!   (`tests/integration/generated.rs` fails while the file is stale).
//!
//! [`Catalogue`] holds both; [`Tool::prepare`] validates and binds one call; [`Validator`] and
//! [`close_matches`] also serve tools of other origins (upstream MCP servers).

mod bind;
mod catalogue;
mod curated;
mod generate;
mod tool;
mod validate;

pub use catalogue::{Catalogue, CatalogueError};
pub use generate::generate;
pub use tool::{
    Binding, Hints, HttpCall, Method, Place, RateClass, Route, Source, Tool, Violation,
};
pub use validate::{Validator, close_matches};
