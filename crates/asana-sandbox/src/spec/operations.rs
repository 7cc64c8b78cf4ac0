//! The spec's operations: a segment trie from method and path to an operation, and each
//! operation's query parameters and request body.

use std::collections::HashMap;

use axum::http::Method;
use serde_json::Value;

use super::schema::{Compiler, Kind, Location, Problem, SchemaId, Schemas, Violation, in_range};
use super::{Components, LoadError, RawOperation, RawPathItem};

/// The methods Asana's spec uses, as an index into [`Node::operations`].
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn method_index(method: &Method) -> Option<usize> {
    Some(match *method {
        Method::GET | Method::HEAD => 0,
        Method::PUT => 1,
        Method::POST => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        _ => return None,
    })
}

/// A scalar a query parameter (or one element of a list parameter) must parse as.
#[derive(Debug)]
enum Scalar {
    /// Any text, or one of `allowed` when that is not empty.
    String {
        allowed: Box<[Box<str>]>,
    },
    Integer {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    Number {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    Boolean,
}

impl Scalar {
    fn compile(schema: &Value) -> Result<Self, LoadError> {
        let minimum = schema.get("minimum").and_then(Value::as_f64);
        let maximum = schema.get("maximum").and_then(Value::as_f64);
        Ok(match schema.get("type").and_then(Value::as_str) {
            None | Some("string") => Self::String {
                allowed: schema
                    .get("enum")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(Into::into)
                    .collect(),
            },
            Some("integer") => Self::Integer { minimum, maximum },
            Some("number") => Self::Number { minimum, maximum },
            Some("boolean") => Self::Boolean,
            Some(other) => return Err(LoadError::Type(other.to_owned())),
        })
    }

    fn check(&self, text: &str) -> Result<(), Problem> {
        let range = |number: f64, minimum: Option<f64>, maximum: Option<f64>| {
            if in_range(number, minimum, maximum) {
                Ok(())
            } else {
                Err(Problem::Range { minimum, maximum })
            }
        };
        match self {
            Self::String { allowed } => {
                if allowed.is_empty() || allowed.iter().any(|a| &**a == text) {
                    Ok(())
                } else {
                    Err(Problem::NotAllowed(
                        allowed.iter().map(|a| Value::from(&**a)).collect(),
                    ))
                }
            }
            Self::Integer { minimum, maximum } => match text.parse::<i64>() {
                Ok(number) => range(number as f64, *minimum, *maximum),
                Err(_) => Err(Problem::Type {
                    expected: Kind::Integer,
                    actual: Kind::String,
                }),
            },
            Self::Number { minimum, maximum } => match text.parse::<f64>() {
                Ok(number) if number.is_finite() => range(number, *minimum, *maximum),
                _ => Err(Problem::Type {
                    expected: Kind::Number,
                    actual: Kind::String,
                }),
            },
            Self::Boolean => match text {
                "true" | "false" => Ok(()),
                _ => Err(Problem::Type {
                    expected: Kind::Boolean,
                    actual: Kind::String,
                }),
            },
        }
    }
}

/// One query parameter of an operation.
#[derive(Debug)]
struct Param {
    name: Box<str>,
    required: bool,
    /// `?opt_pretty` with no value is fine.
    allow_empty: bool,
    /// Arrays come comma-separated (`style: form, explode: false`) or repeated; each element
    /// is checked.
    list: bool,
    scalar: Scalar,
}

impl Param {
    fn check(&self, value: &str) -> Result<(), Violation> {
        if value.is_empty() && self.allow_empty {
            return Ok(());
        }
        let mut elements = if self.list {
            value.split(',').collect()
        } else {
            vec![value]
        };
        if self.list {
            elements.retain(|e| !e.is_empty());
        }
        for element in elements {
            self.scalar.check(element).map_err(|problem| Violation {
                at: self.name.to_string(),
                problem,
            })?;
        }
        Ok(())
    }
}

/// The request body of an operation.
#[derive(Debug)]
pub struct Body {
    /// `requestBody.required`.
    pub required: bool,
    /// Whether the body has a `data` member (every JSON body of Asana's does); a required body
    /// without one is answered like Asana does, `data: Missing input`.
    pub has_data: bool,
    /// The schema of the `application/json` body; `None` when the operation takes only other
    /// content types (multipart uploads), which pass unchecked.
    pub json: Option<SchemaId>,
}

/// One operation of the spec, compiled for checking requests.
#[derive(Debug)]
pub struct Operation {
    /// The spec's `operationId`, e.g. `createTask`.
    pub id: Box<str>,
    query: Box<[Param]>,
    pub body: Option<Body>,
}

impl Operation {
    /// Checks decoded query `pairs` (in order, repeats kept): required parameters present,
    /// declared ones well-typed; undeclared ones are ignored, as Asana does.
    pub fn check_query(&self, pairs: &[(String, String)]) -> Result<(), Violation> {
        for (name, value) in pairs {
            if let Some(param) = self.query.iter().find(|p| *p.name == **name) {
                param.check(value)?;
            }
        }
        for param in self.query.iter().filter(|p| p.required) {
            if !pairs.iter().any(|(name, _)| *name == *param.name) {
                return Err(Violation {
                    at: param.name.to_string(),
                    problem: Problem::Missing,
                });
            }
        }
        Ok(())
    }
}

/// One path segment level of the trie: literal children first, then at most one parameter
/// child (`{task_gid}`), so `/tasks/search` wins over `/tasks/{task_gid}`.
#[derive(Debug, Default)]
struct Node {
    literals: HashMap<Box<str>, Node>,
    parameter: Option<Box<Node>>,
    /// Index into [`Operations::operations`], by [`METHODS`] position.
    operations: [Option<u32>; METHODS.len()],
}

impl Node {
    fn find(&self, mut segments: std::str::Split<'_, char>, method: usize) -> Option<u32> {
        let Some(segment) = segments.next() else {
            return self.operations.get(method).copied().flatten();
        };
        if let Some(found) = self
            .literals
            .get(segment)
            .and_then(|child| child.find(segments.clone(), method))
        {
            return Some(found);
        }
        if segment.is_empty() {
            return None;
        }
        self.parameter.as_ref()?.find(segments, method)
    }
}

/// Every operation of the spec, and the trie that finds them.
#[derive(Debug)]
pub struct Operations {
    root: Node,
    operations: Vec<Operation>,
    pub schemas: Schemas,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a Operation),
    /// No such path, or the path does not take this method.
    Unknown,
}

impl Operations {
    /// Compiles every operation in `paths`.
    pub fn compile(
        paths: &std::collections::BTreeMap<String, RawPathItem>,
        components: &Components,
    ) -> Result<Self, LoadError> {
        let mut compiler = Compiler::new(components);
        let mut root = Node::default();
        let mut operations = Vec::new();
        for (path, item) in paths {
            for (index, raw) in item.operations() {
                let operation =
                    compile_operation(raw, &item.parameters, components, &mut compiler)?;
                let position = u32::try_from(operations.len()).map_err(|_| LoadError::TooLarge)?;
                operations.push(operation);
                let mut node = &mut root;
                for segment in path.trim_start_matches('/').split('/') {
                    node = if segment.starts_with('{') && segment.ends_with('}') {
                        node.parameter.get_or_insert_with(Box::default)
                    } else {
                        node.literals.entry(segment.into()).or_default()
                    };
                }
                if let Some(slot) = node.operations.get_mut(index) {
                    *slot = Some(position);
                }
            }
        }
        let schemas = compiler.finish();
        for body in operations.iter_mut().filter_map(|o| o.body.as_mut()) {
            body.has_data = body.json.is_some_and(|id| schemas.has_property(id, "data"));
        }
        Ok(Self {
            root,
            operations,
            schemas,
        })
    }

    /// The operation for `method` on `path` (`/tasks/123`, without `/api/1.0`).
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let found = method_index(method).and_then(|method| {
            let segments = path.strip_prefix('/')?.split('/');
            self.root.find(segments, method)
        });
        match found.and_then(|index| self.operations.get(index as usize)) {
            Some(operation) => Lookup::Found(operation),
            None => Lookup::Unknown,
        }
    }

    /// How many operations were compiled.
    pub fn len(&self) -> usize {
        self.operations.len()
    }
}

impl RawPathItem {
    /// The operations of this path with their [`METHODS`] position.
    fn operations(&self) -> impl Iterator<Item = (usize, &RawOperation)> {
        [&self.get, &self.put, &self.post, &self.delete, &self.patch]
            .into_iter()
            .enumerate()
            .filter_map(|(index, operation)| operation.as_ref().map(|o| (index, o)))
    }
}

const PARAMETER_REF: &str = "#/components/parameters/";
const BODY_REF: &str = "#/components/requestBodies/";

/// Follows a `$ref` into `components.{parameters|requestBodies}`.
fn resolve<'a>(
    raw: &'a Value,
    prefix: &str,
    table: &'a HashMap<String, Value>,
) -> Result<&'a Value, LoadError> {
    match raw.get("$ref").and_then(Value::as_str) {
        None => Ok(raw),
        Some(reference) => reference
            .strip_prefix(prefix)
            .and_then(|name| table.get(name))
            .ok_or_else(|| LoadError::Reference(reference.to_owned())),
    }
}

fn compile_operation<'a>(
    raw: &'a RawOperation,
    shared: &'a [Value],
    components: &'a Components,
    compiler: &mut Compiler<'a>,
) -> Result<Operation, LoadError> {
    // Operation-level parameters override path-level ones of the same name and location.
    let mut parameters: Vec<&Value> = Vec::new();
    for parameter in raw.parameters.iter().chain(shared) {
        let parameter = resolve(parameter, PARAMETER_REF, &components.parameters)?;
        let key = (parameter.get("name"), parameter.get("in"));
        if !parameters
            .iter()
            .any(|seen| (seen.get("name"), seen.get("in")) == key)
        {
            parameters.push(parameter);
        }
    }
    let query = parameters
        .into_iter()
        .filter(|p| p.get("in").and_then(Value::as_str) == Some("query"))
        .map(compile_param)
        .collect::<Result<Vec<_>, _>>()?;
    let body = match &raw.request_body {
        None => None,
        Some(body) => {
            let body = resolve(body, BODY_REF, &components.request_bodies)?;
            let json = body
                .get("content")
                .and_then(|content| content.get("application/json"))
                .and_then(|media| media.get("schema"));
            let json = match json {
                Some(schema) => Some(compiler.compile(schema)?),
                None => None,
            };
            Some(Body {
                required: body.get("required") == Some(&Value::Bool(true)),
                has_data: false,
                json,
            })
        }
    };
    Ok(Operation {
        id: raw.operation_id.as_str().into(),
        query: query.into(),
        body,
    })
}

fn compile_param(raw: &Value) -> Result<Param, LoadError> {
    let name = raw
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| LoadError::Parameter(raw.to_string()))?;
    let schema = raw.get("schema").unwrap_or(&Value::Null);
    let list = schema.get("type").and_then(Value::as_str) == Some("array");
    let element = if list {
        schema.get("items").unwrap_or(&Value::Null)
    } else {
        schema
    };
    let mut scalar = Scalar::compile(element)?;
    // `opt_fields` lists what to return. Its enum cannot list everything Asana accepts (any
    // depth of dotted paths, `this.(a|b)` groups), and a field Asana does not know is left
    // out of the answer rather than refused, so the enum is not enforced.
    if name == "opt_fields" {
        scalar = Scalar::String {
            allowed: Box::default(),
        };
    }
    Ok(Param {
        name: name.into(),
        required: raw.get("required") == Some(&Value::Bool(true)),
        allow_empty: raw.get("allowEmptyValue") == Some(&Value::Bool(true)),
        list,
        scalar,
    })
}

/// Validates a parsed JSON body against `body`; `None` when there was no body at all.
pub fn check_body(schemas: &Schemas, body: &Body, value: Option<&Value>) -> Result<(), Violation> {
    let missing = || Violation {
        at: "data".to_owned(),
        problem: Problem::Missing,
    };
    let Some(value) = value else {
        return if body.required {
            Err(missing())
        } else {
            Ok(())
        };
    };
    if body.required && body.has_data && value.get("data").is_none() {
        return Err(missing());
    }
    match body.json {
        Some(schema) => schemas.validate(schema, value, &Location::Body),
        None => Ok(()),
    }
}
