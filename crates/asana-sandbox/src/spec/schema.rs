//! Request-body schemas compiled from the spec's OpenAPI 3.0 subset into a flat arena, and the
//! validator that walks a JSON value against them.
//!
//! What is checked: `type`, `nullable`, `enum`, `properties`, `required`, `items`, `allOf`,
//! `anyOf`/`oneOf` (both as "at least one", see below), and `minimum`/`maximum`. What is not, on
//! purpose:
//!
//! - `readOnly` properties are dropped when compiling: they describe responses, and Asana ignores
//!   them in requests.
//! - `additionalProperties` and unknown properties: Asana accepts unknown fields, and the spec's
//!   only typed use (`custom_fields: {additionalProperties: {type: string}}`) contradicts its own
//!   description ("text, enum GID, a number, etc.") and Asana, which take numbers and arrays.
//! - `format` and `pattern`: formats are advisory, and the spec's two patterns are malformed
//!   (`[a|b]` character classes where alternations were meant).
//! - `oneOf` is checked as `anyOf`: the spec's one use (a custom field given as a gid or as an
//!   object) has branches that cannot overlap, so "exactly one" adds nothing but cost.

use std::collections::HashMap;
use std::fmt;

use serde_json::Value;

use super::{Components, LoadError};

/// An index into [`Schemas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaId(u32);

/// A JSON type as OpenAPI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Kind {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "object" => Self::Object,
            "array" => Self::Array,
            "string" => Self::String,
            "integer" => Self::Integer,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            _ => return None,
        })
    }

    /// The kind a JSON value has (`None` for null); integral numbers are integers.
    fn of(value: &Value) -> Option<Self> {
        Some(match value {
            Value::Null => return None,
            Value::Bool(_) => Self::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => Self::Integer,
            Value::Number(_) => Self::Number,
            Value::String(_) => Self::String,
            Value::Array(_) => Self::Array,
            Value::Object(_) => Self::Object,
        })
    }

    /// Whether a value of kind `actual` satisfies this kind (an integer is a number; `1.0` is
    /// an integer, as JSON Schema says).
    fn accepts(self, actual: Self, value: &Value) -> bool {
        match (self, actual) {
            (Self::Number, Self::Integer) => true,
            (Self::Integer, Self::Number) => value.as_f64().is_some_and(|f| f.fract() == 0.0),
            (expected, actual) => expected == actual,
        }
    }

    /// "a string", "an object", for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            Self::Object => "an object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::Boolean => "a boolean",
        }
    }
}

/// One compiled schema. Empty slices and `None`s mean "no constraint".
#[derive(Debug, Default)]
struct Node {
    kind: Option<Kind>,
    nullable: bool,
    allowed: Box<[Value]>,
    /// Writable properties only (`readOnly` ones are dropped).
    properties: Box<[(Box<str>, SchemaId)]>,
    required: Box<[Box<str>]>,
    items: Option<SchemaId>,
    all_of: Box<[SchemaId]>,
    any_of: Box<[SchemaId]>,
    minimum: Option<f64>,
    maximum: Option<f64>,
}

/// Every compiled schema, addressed by [`SchemaId`]; `$ref`s are compiled once and shared, so
/// recursive schemas are cycles of ids.
#[derive(Debug, Default)]
pub struct Schemas {
    nodes: Vec<Node>,
}

/// Compiles raw schemas, resolving `$ref`s into `components.schemas` once each.
pub struct Compiler<'a> {
    components: &'a Components,
    schemas: Schemas,
    by_ref: HashMap<&'a str, SchemaId>,
}

impl fmt::Debug for Compiler<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiler")
            .field("compiled", &self.schemas.nodes.len())
            .finish_non_exhaustive()
    }
}

const SCHEMA_REF: &str = "#/components/schemas/";

impl<'a> Compiler<'a> {
    pub fn new(components: &'a Components) -> Self {
        Self {
            components,
            schemas: Schemas::default(),
            by_ref: HashMap::new(),
        }
    }

    /// The compiled schemas.
    pub fn finish(self) -> Schemas {
        self.schemas
    }

    fn target(&self, reference: &str) -> Result<&'a Value, LoadError> {
        reference
            .strip_prefix(SCHEMA_REF)
            .and_then(|name| self.components.schemas.get(name))
            .ok_or_else(|| LoadError::Reference(reference.to_owned()))
    }

    /// Whether `raw` (or what it refers to) is marked `readOnly`.
    fn read_only(&self, raw: &Value) -> Result<bool, LoadError> {
        let raw = match raw.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.target(reference)?,
            None => raw,
        };
        Ok(raw.get("readOnly") == Some(&Value::Bool(true)))
    }

    /// Compiles `raw`, a schema object as the spec writes it.
    pub fn compile(&mut self, raw: &'a Value) -> Result<SchemaId, LoadError> {
        if let Some(reference) = raw.get("$ref").and_then(Value::as_str) {
            if let Some(&id) = self.by_ref.get(reference) {
                return Ok(id);
            }
            let target = self.target(reference)?;
            let id = self.reserve();
            self.by_ref.insert(reference, id);
            let node = self.node(target)?;
            self.set(id, node);
            return Ok(id);
        }
        let node = self.node(raw)?;
        let id = self.reserve();
        self.set(id, node);
        Ok(id)
    }

    fn reserve(&mut self) -> SchemaId {
        let id = SchemaId(u32::try_from(self.schemas.nodes.len()).unwrap_or(u32::MAX));
        self.schemas.nodes.push(Node::default());
        id
    }

    fn set(&mut self, id: SchemaId, node: Node) {
        if let Some(slot) = self.schemas.nodes.get_mut(id.0 as usize) {
            *slot = node;
        }
    }

    fn list(&mut self, raw: &'a Value, key: &str) -> Result<Vec<SchemaId>, LoadError> {
        raw.get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|branch| self.compile(branch))
            .collect()
    }

    fn node(&mut self, raw: &'a Value) -> Result<Node, LoadError> {
        let kind = match raw.get("type").and_then(Value::as_str) {
            Some(name) => Some(Kind::parse(name).ok_or_else(|| LoadError::Type(name.to_owned()))?),
            None => None,
        };
        let mut properties = Vec::new();
        if let Some(raw_properties) = raw.get("properties").and_then(Value::as_object) {
            for (name, property) in raw_properties {
                if !self.read_only(property)? {
                    properties.push((name.as_str().into(), self.compile(property)?));
                }
            }
        }
        let items = match raw.get("items") {
            Some(items) => Some(self.compile(items)?),
            None => None,
        };
        let mut any_of = self.list(raw, "anyOf")?;
        any_of.extend(self.list(raw, "oneOf")?);
        Ok(Node {
            kind,
            nullable: is_nullable(raw)
                || raw
                    .get("allOf")
                    .and_then(Value::as_array)
                    .is_some_and(|branches| branches.iter().any(is_nullable)),
            allowed: raw
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into(),
            properties: properties.into(),
            required: raw
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(Into::into)
                .collect(),
            items,
            all_of: self.list(raw, "allOf")?.into(),
            any_of: any_of.into(),
            minimum: raw.get("minimum").and_then(Value::as_f64),
            maximum: raw.get("maximum").and_then(Value::as_f64),
        })
    }
}

/// `nullable: true`. The spec also writes a nullable reference as
/// `allOf: [{$ref: X}, {nullable: true, …}]` (26 times, e.g. `TaskBase.completed_by`), which
/// read literally can never be null since `X` is not nullable; its descriptions say null, and
/// Asana sends and accepts null there, so a nullable `allOf` branch makes the whole schema
/// nullable.
fn is_nullable(raw: &Value) -> bool {
    raw.get("nullable") == Some(&Value::Bool(true))
}

/// Where in the body a value sits, kept on the stack while validating and rendered only for an
/// error (`data.followers[1]`): Asana names fields from inside the body, so the body's own
/// members have no prefix.
#[derive(Debug, Clone, Copy)]
pub enum Location<'a> {
    /// The whole request body.
    Body,
    Field(&'a Location<'a>, &'a str),
    Index(&'a Location<'a>, usize),
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Body => f.write_str("body"),
            Self::Field(Self::Body, name) => f.write_str(name),
            Self::Field(parent, name) => write!(f, "{parent}.{name}"),
            Self::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

/// Why a value does not fit; rendered as Asana's `field: message`.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    Missing,
    Null,
    Type {
        expected: Kind,
        actual: Kind,
    },
    NotAllowed(Box<[Value]>),
    Range {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    NoForm,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("Missing input"),
            Self::Null => f.write_str("Value cannot be null"),
            Self::Type { expected, actual } => write!(
                f,
                "Value must be {}, not {}",
                expected.with_article(),
                actual.with_article()
            ),
            Self::NotAllowed(allowed) => {
                f.write_str("Value must be one of ")?;
                for (index, value) in allowed.iter().filter(|v| !v.is_null()).enumerate() {
                    if index > 0 {
                        f.write_str(", ")?;
                    }
                    match value {
                        Value::String(text) => f.write_str(text)?,
                        other => write!(f, "{other}")?,
                    }
                }
                Ok(())
            }
            Self::Range { minimum, maximum } => match (minimum, maximum) {
                (Some(min), Some(max)) => write!(f, "Must be between {min} and {max}"),
                (Some(min), None) => write!(f, "Must be at least {min}"),
                (None, Some(max)) => write!(f, "Must be at most {max}"),
                (None, None) => f.write_str("Out of range"),
            },
            Self::NoForm => f.write_str("Value matches none of the allowed forms"),
        }
    }
}

/// A validation failure: where, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub at: String,
    pub problem: Problem,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.problem)
    }
}

fn fail(at: &Location<'_>, problem: Problem) -> Result<(), Violation> {
    Err(Violation {
        at: at.to_string(),
        problem,
    })
}

/// Checks a number against an inclusive range.
pub fn in_range(number: f64, minimum: Option<f64>, maximum: Option<f64>) -> bool {
    minimum.is_none_or(|min| number >= min) && maximum.is_none_or(|max| number <= max)
}

impl Schemas {
    fn node(&self, id: SchemaId) -> Option<&Node> {
        self.nodes.get(id.0 as usize)
    }

    /// Whether the schema `id` is an object with a property `name`, directly or through
    /// `allOf`.
    pub fn has_property(&self, id: SchemaId, name: &str) -> bool {
        self.node(id).is_some_and(|node| {
            node.properties.iter().any(|(n, _)| &**n == name)
                || node
                    .all_of
                    .iter()
                    .any(|&branch| self.has_property(branch, name))
        })
    }

    /// Validates `value` at `at` against schema `id`, reporting the first violation.
    pub fn validate(
        &self,
        id: SchemaId,
        value: &Value,
        at: &Location<'_>,
    ) -> Result<(), Violation> {
        let Some(node) = self.node(id) else {
            return Ok(());
        };
        let actual = Kind::of(value);
        let Some(actual) = actual else {
            if node.nullable {
                return Ok(());
            }
            if node.kind.is_some() {
                return fail(at, Problem::Null);
            }
            // An untyped schema (a bare `allOf`/`$ref` wrapper) leaves null to its branches.
            return self.branches(node, value, at);
        };
        if let Some(expected) = node.kind
            && !expected.accepts(actual, value)
        {
            return fail(at, Problem::Type { expected, actual });
        }
        if !node.allowed.is_empty() && !node.allowed.contains(value) {
            return fail(at, Problem::NotAllowed(node.allowed.clone()));
        }
        if let Some(number) = value.as_f64()
            && !in_range(number, node.minimum, node.maximum)
        {
            return fail(
                at,
                Problem::Range {
                    minimum: node.minimum,
                    maximum: node.maximum,
                },
            );
        }
        match value {
            Value::Object(object) => {
                for name in node.required.iter() {
                    if !object.contains_key(&**name) {
                        return fail(&Location::Field(at, name), Problem::Missing);
                    }
                }
                for (name, property) in node.properties.iter() {
                    if let Some(field) = object.get(&**name) {
                        self.validate(*property, field, &Location::Field(at, name))?;
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = node.items {
                    for (index, element) in items.iter().enumerate() {
                        self.validate(item, element, &Location::Index(at, index))?;
                    }
                }
            }
            _ => {}
        }
        self.branches(node, value, at)
    }

    /// `allOf` (each must hold) and `anyOf`/`oneOf` (one must hold).
    fn branches(&self, node: &Node, value: &Value, at: &Location<'_>) -> Result<(), Violation> {
        for &branch in node.all_of.iter() {
            self.validate(branch, value, at)?;
        }
        if node.any_of.is_empty() {
            return Ok(());
        }
        let mut first = None;
        for &branch in node.any_of.iter() {
            match self.validate(branch, value, at) {
                Ok(()) => return Ok(()),
                Err(violation) => {
                    // Prefer the complaint of a branch of the value's own type: it says more.
                    let same_kind = self
                        .node(branch)
                        .and_then(|n| n.kind)
                        .zip(Kind::of(value))
                        .is_some_and(|(expected, actual)| expected.accepts(actual, value));
                    if same_kind && first.is_none() {
                        first = Some(violation);
                    }
                }
            }
        }
        match first {
            Some(violation) => Err(violation),
            None => fail(at, Problem::NoForm),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn components(schemas: Value) -> Components {
        Components {
            schemas: serde_json::from_value(schemas).unwrap_or_default(),
            parameters: HashMap::new(),
            request_bodies: HashMap::new(),
        }
    }

    /// Validates `{"data": value}` against `{"data": raw}`.
    fn check(components: &Components, raw: &Value, value: Value) -> Result<(), String> {
        let body = json!({"type": "object", "properties": {"data": raw}});
        let mut compiler = Compiler::new(components);
        let id = compiler.compile(&body).map_err(|e| e.to_string())?;
        let schemas = compiler.finish();
        schemas
            .validate(id, &json!({ "data": value }), &Location::Body)
            .map_err(|v| v.to_string())
    }

    #[test]
    fn types_nullable_and_enums() {
        let c = components(json!({}));
        let raw = json!({"type": "object", "properties": {
            "name": {"type": "string"},
            "count": {"type": "integer"},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "done": {"type": "boolean", "nullable": true},
            "color": {"type": "string", "enum": ["red", "blue", null], "nullable": true},
        }});
        assert_eq!(
            check(&c, &raw, json!({"name": "x", "count": 2, "ratio": 0.5})),
            Ok(())
        );
        assert_eq!(
            check(&c, &raw, json!({"count": 2.0, "done": null, "color": null})),
            Ok(())
        );
        assert_eq!(
            check(&c, &raw, json!({"name": 5})),
            Err("data.name: Value must be a string, not an integer".into())
        );
        assert_eq!(
            check(&c, &raw, json!({"name": null})),
            Err("data.name: Value cannot be null".into())
        );
        assert_eq!(
            check(&c, &raw, json!({"count": 1.5})),
            Err("data.count: Value must be an integer, not a number".into())
        );
        assert_eq!(
            check(&c, &raw, json!({"color": "green"})),
            Err("data.color: Value must be one of red, blue".into())
        );
        assert_eq!(
            check(&c, &raw, json!({"ratio": 2})),
            Err("data.ratio: Must be between 0 and 1".into())
        );
        assert_eq!(
            check(&c, &raw, json!([])),
            Err("data: Value must be an object, not an array".into())
        );
    }

    #[test]
    fn refs_all_of_required_and_read_only() {
        let c = components(json!({
            "Base": {"type": "object", "properties": {
                "gid": {"type": "string", "readOnly": true},
                "resource_type": {"type": "string", "readOnly": true},
                "followers": {"type": "array", "items": {"type": "string"}},
            }},
            "Ro": {"type": "object", "readOnly": true, "properties": {"x": {"type": "string"}}},
            "Request": {"allOf": [
                {"$ref": "#/components/schemas/Base"},
                {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"},
                    "owner": {"$ref": "#/components/schemas/Ro"},
                    "parent": {"allOf": [{"$ref": "#/components/schemas/Request"}], "nullable": true},
                    "owner_ref": {"allOf": [
                        {"$ref": "#/components/schemas/Base"},
                        {"type": "object", "nullable": true},
                    ]},
                    "plain_ref": {"allOf": [{"$ref": "#/components/schemas/Base"}]},
                }},
            ]},
        }));
        let raw = json!({"$ref": "#/components/schemas/Request"});
        // readOnly fields are ignored, whatever they hold; unknown fields are accepted.
        assert_eq!(
            check(
                &c,
                &raw,
                json!({"name": "n", "gid": 1, "owner": 5, "extra": [1]})
            ),
            Ok(())
        );
        assert_eq!(
            check(&c, &raw, json!({"gid": "1"})),
            Err("data.name: Missing input".into())
        );
        assert_eq!(
            check(&c, &raw, json!({"name": "n", "followers": ["a", 2]})),
            Err("data.followers[1]: Value must be a string, not an integer".into())
        );
        // Recursion through $ref, and nullable on an allOf wrapper.
        assert_eq!(
            check(&c, &raw, json!({"name": "n", "parent": null})),
            Ok(())
        );
        // The spec's nullable-reference idiom: a nullable allOf branch.
        assert_eq!(
            check(&c, &raw, json!({"name": "n", "owner_ref": null})),
            Ok(())
        );
        assert_eq!(
            check(&c, &raw, json!({"name": "n", "plain_ref": null})),
            Err("data.plain_ref: Value cannot be null".into())
        );
        assert_eq!(
            check(&c, &raw, json!({"name": "n", "parent": {"name": 3}})),
            Err("data.parent.name: Value must be a string, not an integer".into())
        );
    }

    #[test]
    fn one_of_and_any_of_need_one_branch() {
        let c = components(json!({
            "Field": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        }));
        let raw = json!({"oneOf": [{"type": "string"}, {"$ref": "#/components/schemas/Field"}]});
        assert_eq!(check(&c, &raw, json!("123")), Ok(()));
        assert_eq!(check(&c, &raw, json!({"name": "x"})), Ok(()));
        assert_eq!(
            check(&c, &raw, json!({})),
            Err("data.name: Missing input".into())
        );
        assert_eq!(
            check(&c, &raw, json!(true)),
            Err("data: Value matches none of the allowed forms".into())
        );
    }

    #[test]
    fn unknown_refs_and_types_fail_to_compile() {
        let c = components(json!({}));
        assert!(check(&c, &json!({"$ref": "#/components/schemas/Nope"}), json!(1)).is_err());
        assert!(check(&c, &json!({"type": "date"}), json!(1)).is_err());
    }
}
