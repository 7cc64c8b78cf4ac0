//! Request validation against Asana's official OpenAPI document, vendored in `spec/` (see
//! `spec/SOURCE.md`), so a client that sends what real Asana would refuse is refused here too,
//! with Asana's error envelope and a message naming the field (`data.name: Missing input`).
//!
//! [`validate`] runs on every `/api/1.0` route, after authentication and limits:
//!
//! - a method and path the spec does not have → 404 `Not found` (a path the spec has but the
//!   sandbox does not serve falls through to the router's own 404);
//! - query parameters: required ones present; integers, numbers, booleans and enums as
//!   declared; `minimum`/`maximum` (`limit` is 1..100); comma lists element by element;
//! - JSON bodies (`{"data": …}`): the operation's schema (the `schema` module says what that
//!   covers and what it leaves out on purpose).
//!   Form and multipart bodies pass unchecked: the spec describes only JSON (and the
//!   attachment upload), and Asana accepts form bodies everywhere.
//!
//! # Design
//!
//! The YAML is embedded with `include_str!`, so the binary needs no file at run time, and is
//! parsed on the first request into only what validation needs (paths, their parameters and
//! request bodies, `components.{schemas,parameters,requestBodies}`; responses, examples, tags
//! and the rest are skipped by serde). That is compiled into a segment trie of operations and a flat arena of
//! schemas where every `$ref` is resolved once; the YAML tree is then dropped. Parsing and
//! compiling take about 0.35 s in a debug build and 0.07 s in release, once per process (the
//! unit test `embedded_spec_compiles` prints it). A request then costs a trie lookup and a walk
//! of its own query and body: measured in release, under 1 µs for a GET and 2 to 3 µs for a
//! task created or updated with a JSON body, buffering and parsing included.
//!
//! The validator is hand-written rather than the `jsonschema` crate because the spec is
//! OpenAPI 3.0, not JSON Schema: `nullable`, request-side `readOnly`, and Asana's leniency
//! (unknown fields, `custom_fields` values of any type) would each need a rewrite of the
//! schema first; the subset the spec uses is small (type, properties, required, enum, items,
//! allOf/anyOf/oneOf, nullable, minimum/maximum); and the crate would add a large dependency
//! tree to a crate every test builds.

mod operations;
mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Instant;

use axum::body::Body as HttpBody;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use self::operations::{Lookup, Operation, Operations, check_body};
use self::schema::Violation;
use crate::error::ApiError;
use crate::rest::BASE;

/// Asana's OpenAPI document, byte for byte.
const EMBEDDED: &str = include_str!("../../spec/asana_oas.yaml");

/// The largest JSON body checked (and accepted): axum's default body limit.
const MAX_BODY: usize = 2 * 1024 * 1024;

/// Why the spec could not be compiled (a bug in this module or a spec it does not know).
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("the spec is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("unresolved reference {0}")]
    Reference(String),
    #[error("unsupported schema type {0:?}")]
    Type(String),
    #[error("parameter without a name: {0}")]
    Parameter(String),
    #[error("more operations than fit an index")]
    TooLarge,
}

/// The parts of the document validation reads; serde skips the rest without building it.
#[derive(Debug, Deserialize)]
struct Document {
    paths: BTreeMap<String, RawPathItem>,
    components: Components,
}

/// `components`, as raw JSON for resolving `$ref`s while compiling.
#[derive(Debug, Deserialize)]
struct Components {
    #[serde(default)]
    schemas: HashMap<String, Value>,
    #[serde(default)]
    parameters: HashMap<String, Value>,
    #[serde(default, rename = "requestBodies")]
    request_bodies: HashMap<String, Value>,
}

/// A path item: shared parameters and up to one operation per method.
#[derive(Debug, Deserialize)]
struct RawPathItem {
    #[serde(default)]
    parameters: Vec<Value>,
    get: Option<RawOperation>,
    put: Option<RawOperation>,
    post: Option<RawOperation>,
    delete: Option<RawOperation>,
    patch: Option<RawOperation>,
}

/// An operation, without its descriptions and responses.
#[derive(Debug, Deserialize)]
struct RawOperation {
    #[serde(rename = "operationId")]
    operation_id: String,
    #[serde(default)]
    parameters: Vec<Value>,
    #[serde(rename = "requestBody")]
    request_body: Option<Value>,
}

/// Parses and compiles a spec document.
fn compile(yaml: &str) -> Result<Operations, LoadError> {
    let document: Document = serde_yaml::from_str(yaml)?;
    Operations::compile(&document.paths, &document.components)
}

/// The compiled embedded spec, built on first use; `None` if it does not compile, which the
/// unit tests rule out.
fn spec() -> Option<&'static Operations> {
    static COMPILED: OnceLock<Option<Operations>> = OnceLock::new();
    COMPILED
        .get_or_init(|| {
            let started = Instant::now();
            match compile(EMBEDDED) {
                Ok(operations) => {
                    tracing::debug!(
                        operations = operations.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "compiled the openapi spec"
                    );
                    Some(operations)
                }
                Err(error) => {
                    tracing::error!(%error, "the embedded openapi spec does not compile");
                    None
                }
            }
        })
        .as_ref()
}

/// Checks a REST request's path, parameters and body against the spec before its handler runs.
pub async fn validate(request: Request, next: Next) -> Response {
    match check(request).await {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// A 400 for `violation`, logged at debug level (messages name fields, never their values).
fn refuse(operation: &Operation, violation: Violation) -> ApiError {
    tracing::debug!(operation = %operation.id, %violation, "request does not match the spec");
    ApiError::bad_request(violation.to_string())
}

/// The request, unchanged in meaning (a buffered body is put back), or the error Asana gives.
async fn check(request: Request) -> Result<Request, ApiError> {
    let spec = spec().ok_or_else(ApiError::server_error)?;
    // Inside the router nested at `/api/1.0` the path arrives without it; strip it anyway so
    // the check does not depend on how it is mounted.
    let path = request.uri().path();
    let path = path.strip_prefix(BASE).unwrap_or(path);
    let operation = match spec.lookup(request.method(), path) {
        Lookup::Found(operation) => operation,
        Lookup::Unknown => return Err(ApiError::not_found("Not found")),
    };
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
        .map_err(|_| ApiError::bad_request("Invalid query string"))?;
    operation
        .check_query(&pairs)
        .map_err(|violation| refuse(operation, violation))?;
    check_request_body(spec, operation, request).await
}

/// How a request body is encoded, as far as checking goes.
#[derive(Debug, PartialEq)]
enum Encoding {
    Json,
    /// No `Content-Type`: checked as JSON if there is a body (Asana's clients always send one).
    Unlabelled,
    /// Form or multipart: not described by the spec.
    Other,
}

fn encoding(headers: &HeaderMap) -> Encoding {
    let Some(content_type) = headers.get(header::CONTENT_TYPE) else {
        return Encoding::Unlabelled;
    };
    let essence = content_type
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Encoding::Json
    } else {
        Encoding::Other
    }
}

async fn check_request_body(
    spec: &Operations,
    operation: &Operation,
    request: Request,
) -> Result<Request, ApiError> {
    let Some(body) = &operation.body else {
        return Ok(request);
    };
    if encoding(request.headers()) == Encoding::Other {
        return Ok(request);
    }
    let (parts, stream) = request.into_parts();
    let bytes = axum::body::to_bytes(stream, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large"))?;
    let value = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(&bytes)
                .map_err(|_| ApiError::bad_request("Could not parse the request body as JSON"))?,
        )
    };
    check_body(&spec.schemas, body, value.as_ref())
        .map_err(|violation| refuse(operation, violation))?;
    Ok(Request::from_parts(parts, HttpBody::from(bytes)))
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use serde_json::json;

    use super::*;

    fn operations() -> &'static Operations {
        spec().unwrap_or_else(|| panic!("the embedded spec does not compile"))
    }

    /// The error message for a request, or `None` when it passes.
    fn query_error(method: Method, path: &str, query: &[(&str, &str)]) -> Option<String> {
        let Lookup::Found(operation) = operations().lookup(&method, path) else {
            return Some("Not found".to_owned());
        };
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        operation.check_query(&pairs).err().map(|v| v.to_string())
    }

    fn body_error(method: Method, path: &str, body: Option<Value>) -> Option<String> {
        let spec = operations();
        let Lookup::Found(operation) = spec.lookup(&method, path) else {
            return Some("Not found".to_owned());
        };
        let body_spec = operation.body.as_ref()?;
        check_body(&spec.schemas, body_spec, body.as_ref())
            .err()
            .map(|v| v.to_string())
    }

    #[test]
    fn embedded_spec_compiles() {
        let started = Instant::now();
        let operations = compile(EMBEDDED).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "parsed and compiled {} operations in {:?}",
            operations.len(),
            started.elapsed()
        );
        assert_eq!(operations.len(), 247);
    }

    #[test]
    fn routes_match_literals_before_parameters() {
        let found = |method: Method, path: &str| match operations().lookup(&method, path) {
            Lookup::Found(operation) => operation.id.to_string(),
            Lookup::Unknown => "unknown".to_owned(),
        };
        assert_eq!(found(Method::GET, "/users/me"), "getUser");
        assert_eq!(found(Method::HEAD, "/users/me"), "getUser");
        assert_eq!(found(Method::GET, "/tasks/123"), "getTask");
        assert_eq!(found(Method::PUT, "/tasks/123"), "updateTask");
        assert_eq!(found(Method::POST, "/tasks"), "createTask");
        assert_eq!(
            found(Method::GET, "/workspaces/1/tasks/search"),
            "searchTasksForWorkspace"
        );
        assert_eq!(found(Method::GET, "/nope"), "unknown");
        assert_eq!(found(Method::GET, "/tasks/"), "unknown");
        assert_eq!(found(Method::GET, "/tasks/1/extra/more"), "unknown");
        assert_eq!(found(Method::PATCH, "/tasks/123"), "unknown");
        assert_eq!(found(Method::OPTIONS, "/tasks/123"), "unknown");
        assert_eq!(found(Method::GET, ""), "unknown");
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_error(Method::GET, "/workspaces", &[]), None);
        assert_eq!(
            query_error(
                Method::GET,
                "/workspaces",
                &[("limit", "10"), ("opt_pretty", "")]
            ),
            None
        );
        assert_eq!(
            query_error(Method::GET, "/workspaces", &[("limit", "0")]),
            Some("limit: Must be between 1 and 100".into())
        );
        assert_eq!(
            query_error(Method::GET, "/workspaces", &[("limit", "101")]),
            Some("limit: Must be between 1 and 100".into())
        );
        assert_eq!(
            query_error(Method::GET, "/workspaces", &[("limit", "ten")]),
            Some("limit: Value must be an integer, not a string".into())
        );
        assert_eq!(
            query_error(Method::GET, "/projects", &[("archived", "yes")]),
            Some("archived: Value must be a boolean, not a string".into())
        );
        // opt_fields takes any field path, comma-separated; unknown parameters pass.
        assert_eq!(
            query_error(
                Method::GET,
                "/users/me",
                &[
                    ("opt_fields", "name,this.(a|b).c,whatever"),
                    ("unknown", "x")
                ]
            ),
            None
        );
        assert_eq!(
            query_error(Method::GET, "/users/1/favorites", &[("workspace", "1")]),
            Some("resource_type: Missing input".into())
        );
        assert!(
            query_error(
                Method::GET,
                "/users/1/favorites",
                &[("workspace", "1"), ("resource_type", "planet")]
            )
            .is_some_and(
                |m| m.starts_with("resource_type: Value must be one of portfolio, project")
            )
        );
        assert_eq!(
            query_error(Method::GET, "/events", &[]),
            Some("resource: Missing input".into())
        );
    }

    #[test]
    fn json_bodies() {
        let post = Method::POST;
        assert_eq!(
            body_error(post.clone(), "/tasks", Some(json!({"data": {"name": "x"}}))),
            None
        );
        assert_eq!(
            body_error(post.clone(), "/tasks", None),
            Some("data: Missing input".into())
        );
        assert_eq!(
            body_error(post.clone(), "/tasks", Some(json!({"name": "x"}))),
            Some("data: Missing input".into())
        );
        assert_eq!(
            body_error(post.clone(), "/tasks", Some(json!({"data": {"name": 5}}))),
            Some("data.name: Value must be a string, not an integer".into())
        );
        assert_eq!(
            body_error(
                post.clone(),
                "/tasks",
                Some(json!({"data": {"completed": "yes"}}))
            ),
            Some("data.completed: Value must be a boolean, not a string".into())
        );
        assert_eq!(
            body_error(
                post.clone(),
                "/tasks",
                Some(json!({"data": {"followers": ["1", 2]}}))
            ),
            Some("data.followers[1]: Value must be a string, not an integer".into())
        );
        // readOnly fields and unknown fields are ignored; nullable fields take null.
        assert_eq!(
            body_error(
                post.clone(),
                "/tasks",
                Some(
                    json!({"data": {"gid": 1, "resource_type": 2, "assignee": null,
                                    "completed_by": null, "novel": {}},
                            "options": {"fields": ["name"]}})
                )
            ),
            None
        );
        assert_eq!(
            body_error(
                post.clone(),
                "/webhooks",
                Some(json!({"data": {"resource": "1"}}))
            ),
            Some("data.target: Missing input".into())
        );
        assert!(
            body_error(
                post.clone(),
                "/projects",
                Some(json!({"data": {"default_view": "spreadsheet"}}))
            )
            .is_some_and(|m| m.starts_with("data.default_view: Value must be one of list, board"))
        );
        assert_eq!(
            body_error(post, "/projects", Some(json!({"data": {"color": null}}))),
            None
        );
        // Optional bodies may be left out.
        assert_eq!(body_error(Method::PUT, "/sections/1", None), None);
    }
}
