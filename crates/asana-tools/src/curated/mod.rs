//! The curated tools: hand-written, with flat LLM-friendly input schemas.
//!
//! Each tool is a few lines of [`Builder`] calls. Every route, parameter and body field follows
//! Asana's OpenAPI spec (operation names in the comments); the crate's tests send every tool
//! through Stoplight Prism to prove it.

mod planning;
mod projects;
mod tasks;
mod workspaces;

use serde_json::{Map, Value, json};

use crate::{Binding, Hints, Method, Place, RateClass, Route, Source, Tool};

/// Every curated tool.
pub(crate) fn tools() -> Vec<Tool> {
    [
        tasks::tools(),
        projects::tools(),
        planning::tools(),
        workspaces::tools(),
    ]
    .concat()
}

/// A tool being described: its route, hints and input properties.
struct Builder {
    name: String,
    title: String,
    description: String,
    route: Route,
    hints: Hints,
    properties: Map<String, Value>,
    required: Vec<String>,
    any_of: Vec<Value>,
    last: Option<String>,
}

/// Starts a tool; a route method (`get`, `search`, `post`, `put`, `delete`) must follow.
fn tool(name: &str, title: &str, description: &str) -> Builder {
    Builder {
        name: name.to_owned(),
        title: title.to_owned(),
        description: description.to_owned(),
        route: Route {
            method: Method::Get,
            path: String::new(),
            bindings: Vec::new(),
            paginated: false,
            class: RateClass::Read,
        },
        hints: Hints::default(),
        properties: Map::new(),
        required: Vec::new(),
        any_of: Vec::new(),
        last: None,
    }
}

impl Builder {
    fn route(mut self, method: Method, path: &str, class: RateClass, hints: Hints) -> Self {
        self.route.method = method;
        self.route.path = path.to_owned();
        self.route.class = class;
        self.hints = hints;
        self
    }

    /// A read.
    fn get(self, path: &str) -> Self {
        let hints = Hints {
            read_only: true,
            idempotent: true,
            ..Hints::default()
        };
        self.route(Method::Get, path, RateClass::Read, hints)
    }

    /// A read of Asana's search API (its own per-minute budget).
    fn search(self, path: &str) -> Self {
        let hints = Hints {
            read_only: true,
            idempotent: true,
            ..Hints::default()
        };
        self.route(Method::Get, path, RateClass::Search, hints)
    }

    /// A create or an action.
    fn post(self, path: &str) -> Self {
        self.route(Method::Post, path, RateClass::Write, Hints::default())
    }

    /// An update of absolute values: safe to repeat.
    fn put(self, path: &str) -> Self {
        let hints = Hints {
            idempotent: true,
            ..Hints::default()
        };
        self.route(Method::Put, path, RateClass::Write, hints)
    }

    /// A delete.
    fn delete(self, path: &str) -> Self {
        let hints = Hints {
            destructive: true,
            ..Hints::default()
        };
        self.route(Method::Delete, path, RateClass::Write, hints)
    }

    /// An input property bound to `to`.
    fn prop(mut self, name: &str, schema: Value, to: Place) -> Self {
        self.properties.insert(name.to_owned(), schema);
        self.route.bindings.push(Binding {
            input: name.to_owned(),
            to,
        });
        self.last = Some(name.to_owned());
        self
    }

    /// A required gid substituted for `{name}` in the path.
    fn path(self, name: &str, description: &str) -> Self {
        self.prop(name, gid(description), Place::Path(name.to_owned()))
            .required()
    }

    /// A query parameter of the same name.
    fn query(self, name: &str, schema: Value) -> Self {
        self.prop(name, schema, Place::Query(name.to_owned()))
    }

    /// A query parameter whose name is not a friendly property name (`assignee.any`).
    fn query_as(self, input: &str, parameter: &str, schema: Value) -> Self {
        self.prop(input, schema, Place::Query(parameter.to_owned()))
    }

    /// A field of the body's `data`, of the same name.
    fn data(self, name: &str, schema: Value) -> Self {
        self.prop(name, schema, Place::Data(name.to_owned()))
    }

    /// Marks the property added last as required.
    fn required(mut self) -> Self {
        if let Some(name) = self.last.clone() {
            self.required.push(name);
        }
        self
    }

    /// At least one of `names` must be given.
    fn one_of_required(mut self, names: &[&str]) -> Self {
        self.any_of = names.iter().map(|n| json!({"required": [n]})).collect();
        self
    }

    /// `opt_fields`: which fields to return besides the compact ones; `example` is a
    /// comma-separated list of fields the operation offers.
    fn fields(self, example: &str) -> Self {
        let example: Vec<&str> = example.split(',').collect();
        let schema = json!({
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "uniqueItems": true,
            "description": format!(
                "Fields to return besides the compact gid and name, e.g. {}. Dotted paths reach \
                 into related objects.",
                json!(example)
            ),
            "examples": [example],
        });
        self.prop("opt_fields", schema, Place::OptFields)
    }

    /// `limit` and `offset`: a list Asana pages.
    fn paged(mut self) -> Self {
        self.route.paginated = true;
        self.query(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 100,
                   "description": "Results per page, 1 to 100, e.g. 50."}),
        )
        .query(
            "offset",
            text("The `next_page.offset` of a previous answer, to get the page after it."),
        )
    }

    fn build(self) -> Tool {
        let mut schema = json!({
            "type": "object",
            "properties": self.properties,
            "required": self.required,
            "additionalProperties": false,
        });
        if !self.any_of.is_empty() {
            schema["anyOf"] = Value::Array(self.any_of);
        }
        Tool {
            name: self.name,
            title: self.title,
            description: self.description,
            input_schema: schema,
            hints: self.hints,
            source: Source::Curated,
            route: self.route,
            compiled: crate::tool::Compiled::default(),
        }
    }
}

/// What a user may be given as: a gid, `me`, or an email address.
const USER_PATTERN: &str = r"^([0-9]+|me|[^@\s]+@[^@\s]+)$";

/// A gid of an Asana object.
fn gid(description: &str) -> Value {
    json!({"type": "string", "pattern": "^[0-9]+$", "description": description})
}

/// Several gids.
fn gids(description: &str) -> Value {
    json!({"type": "array", "minItems": 1, "uniqueItems": true,
           "items": {"type": "string", "pattern": "^[0-9]+$"}, "description": description})
}

/// A user: gid, `me` or email.
fn user(description: &str) -> Value {
    json!({"type": "string", "pattern": USER_PATTERN, "description": description})
}

/// Several users.
fn users(description: &str) -> Value {
    json!({"type": "array", "minItems": 1, "uniqueItems": true,
           "items": {"type": "string", "pattern": USER_PATTERN}, "description": description})
}

fn text(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn flag(description: &str) -> Value {
    json!({"type": "boolean", "description": description})
}

fn number(description: &str) -> Value {
    json!({"type": "number", "description": description})
}

/// A calendar date.
fn date(description: &str) -> Value {
    json!({"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$",
           "description": format!("{description} (YYYY-MM-DD)")})
}

/// An instant.
fn instant(description: &str) -> Value {
    json!({"type": "string", "format": "date-time",
           "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$",
           "description": format!("{description} (ISO 8601, e.g. 2026-12-01T17:00:00Z)")})
}

/// One of Asana's enumerated values.
fn choice(values: &[&str], description: &str) -> Value {
    json!({"type": "string", "enum": values, "description": description})
}

/// `schema`, or `null` to clear the value.
fn or_null(mut schema: Value) -> Value {
    let kind = schema["type"].take();
    schema["type"] = json!([kind, "null"]);
    schema
}
