//! The tool catalogue for Asana REST connections.

mod curated;
mod tool;

pub use tool::{Binding, HttpCall, Hints, Method, Place, RateClass, Route, Source, Tool, Violation};
