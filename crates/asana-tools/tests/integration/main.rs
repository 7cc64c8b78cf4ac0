//! The tool catalogue: curated and generated tools against the sandbox, and untrusted input.
//! One test binary for the crate, so its tests share one build and one link.

#[path = "../support/cases.rs"]
#[allow(dead_code, reason = "each module uses part of it")]
mod cases;
mod curated;
mod generated;
mod untrusted_input;
