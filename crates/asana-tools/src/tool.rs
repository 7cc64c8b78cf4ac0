//! What a tool is: its description for an LLM, its input schema, and how its input becomes one
//! Asana REST request.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a tool's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Hand-written, with a flat LLM-friendly schema.
    Curated,
    /// Generated from one operation of Asana's OpenAPI spec.
    Generated,
}

/// Behaviour hints, as in MCP tool annotations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

/// The HTTP method of a tool's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// Which of Asana's per-token limiters a request counts against (besides the per-minute
/// budget every request counts against).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateClass {
    /// A GET: the 50-in-flight read pool.
    Read,
    /// A POST, PUT or DELETE: the 15-in-flight write pool.
    Write,
    /// A search API GET: the read pool and the 60-per-minute search budget.
    Search,
}

/// Where one input property goes in the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Place {
    /// Substituted (percent-encoded) for `{name}` in the path template.
    Path(String),
    /// A query parameter of this name; an array is joined with `,`, booleans and numbers are
    /// written as JSON writes them.
    Query(String),
    /// A field of the body's `data` object.
    Data(String),
    /// The whole body `data` object (generated tools: the input property holds it as is).
    DataObject,
    /// `data[field][input[key]] = value`, e.g. a task's custom field value
    /// (`data.custom_fields[<custom_field_gid>] = value`); `key` names another input property.
    DataEntry { field: String, key: String },
    /// An array of field names sent as `opt_fields=a,b`.
    OptFields,
    /// Not sent: the property only feeds a `DataEntry` key.
    KeyOnly,
}

/// One input property and where it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The input property's name.
    pub input: String,
    pub to: Place,
}

/// How a tool's input becomes one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub method: Method,
    /// Path relative to the API base, with `{placeholders}`, e.g. `/tasks/{task_gid}`.
    pub path: String,
    /// Every input property the request uses; a property without a binding is never sent.
    pub bindings: Vec<Binding>,
    /// The answer is a list that takes `limit`/`offset` (auto-pagination applies).
    #[serde(default)]
    pub paginated: bool,
    pub class: RateClass,
}

/// A tool an LLM can call on a REST connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Unique, e.g. `asana_task_create` or `asana_api_get_task`.
    pub name: String,
    pub title: String,
    /// What the tool does, written for an LLM.
    pub description: String,
    /// JSON Schema of the input object.
    pub input_schema: Value,
    pub hints: Hints,
    pub source: Source,
    pub route: Route,
    /// The input schema, compiled on first use.
    #[serde(skip)]
    pub(crate) compiled: Compiled,
}

/// A tool's compiled input schema, made once per tool on its first call. Two tools compare
/// equal whatever their compiled state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Compiled(pub(crate) std::sync::OnceLock<std::sync::Arc<crate::Validator>>);

impl PartialEq for Compiled {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// One request, ready to send: the path is filled in and encoded, the query is in order.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    pub method: Method,
    /// Relative to the API base, percent-encoded, without a query string.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The body's `data` object, for POST and PUT.
    pub data: Option<Value>,
    pub class: RateClass,
    pub paginated: bool,
    /// Safe to repeat: a GET, or a PUT of absolute values.
    pub idempotent: bool,
}

/// One reason an input was refused, naming the field (`name`, `data.due_on`, or empty for the
/// whole input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub field: String,
    pub description: String,
}
