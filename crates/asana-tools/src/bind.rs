//! Turning a tool's validated input into one request.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::{HttpCall, Method, Place, Tool, Validator, Violation};

impl Tool {
    /// Validates `input` (must be a JSON object) against `input_schema`, then binds it into one
    /// request.
    ///
    /// Each tool's schema is compiled once per process (cached by tool name and checked against
    /// the schema), so only the first call of a tool pays for it.
    pub fn prepare(&self, input: &Value) -> Result<HttpCall, Vec<Violation>> {
        let Some(object) = input.as_object() else {
            return Err(vec![Violation {
                field: String::new(),
                description: "the input must be a JSON object".to_owned(),
            }]);
        };
        validator_for(self)?.validate(input)?;
        bind(self, object)
    }
}

/// The tool's compiled input schema, compiled on its first call.
fn validator_for(tool: &Tool) -> Result<Arc<Validator>, Vec<Violation>> {
    if let Some(validator) = tool.compiled.0.get() {
        return Ok(Arc::clone(validator));
    }
    let validator = Arc::new(Validator::new(&tool.input_schema).map_err(|e| {
        vec![Violation {
            field: String::new(),
            description: format!("the tool's input schema does not compile: {e}"),
        }]
    })?);
    Ok(Arc::clone(tool.compiled.0.get_or_init(|| validator)))
}

/// Binds a validated input: see [`Place`] for where each property goes.
fn bind(tool: &Tool, input: &Map<String, Value>) -> Result<HttpCall, Vec<Violation>> {
    let route = &tool.route;
    let mut violations = Vec::new();
    let mut path = route.path.clone();
    let mut query = Vec::new();
    let mut data = Map::new();
    let mut has_data = false;

    for binding in &route.bindings {
        if matches!(
            binding.to,
            Place::Data(_) | Place::DataObject | Place::DataEntry { .. }
        ) {
            has_data = true;
        }
        let value = match input.get(&binding.input) {
            None => continue,
            Some(Value::Null)
                if !matches!(binding.to, Place::Data(_) | Place::DataEntry { .. }) =>
            {
                continue;
            }
            Some(value) => value,
        };
        let violation = |description: &str| Violation {
            field: binding.input.clone(),
            description: description.to_owned(),
        };
        match &binding.to {
            Place::Path(name) => match value.as_str() {
                Some("") => violations.push(violation("must not be empty")),
                Some(text) => substitute(&mut path, name, text),
                None => violations.push(violation("must be a string")),
            },
            Place::Query(name) => query.push((name.clone(), query_text(value))),
            Place::OptFields => query.push(("opt_fields".to_owned(), query_text(value))),
            Place::Data(field) => {
                data.insert(field.clone(), value.clone());
            }
            Place::DataObject => match value.as_object() {
                Some(object) => data.extend(object.iter().map(|(k, v)| (k.clone(), v.clone()))),
                None => violations.push(violation("must be an object")),
            },
            Place::DataEntry { field, key } => {
                let Some(entry) = input.get(key).and_then(key_text) else {
                    violations.push(Violation {
                        field: key.clone(),
                        description: format!("is required with `{}`", binding.input),
                    });
                    continue;
                };
                let slot = data
                    .entry(field.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                match slot.as_object_mut() {
                    Some(entries) => {
                        entries.insert(entry, value.clone());
                    }
                    None => violations.push(violation(&format!(
                        "conflicts with another value for `{field}`"
                    ))),
                }
            }
            Place::KeyOnly => {}
        }
    }

    for placeholder in placeholders(&path) {
        let field = route
            .bindings
            .iter()
            .find(|b| b.to == Place::Path(placeholder.to_owned()))
            .map_or(placeholder, |b| b.input.as_str());
        violations.push(Violation {
            field: field.to_owned(),
            description: "is required".to_owned(),
        });
    }
    if !violations.is_empty() {
        return Err(violations);
    }

    let sends_body = matches!(route.method, Method::Post | Method::Put);
    Ok(HttpCall {
        method: route.method,
        path,
        query,
        data: (sends_body && has_data).then_some(Value::Object(data)),
        class: route.class,
        paginated: route.paginated,
        idempotent: matches!(route.method, Method::Get | Method::Put),
    })
}

/// A query parameter's text: arrays joined with `,`, strings as is, anything else as JSON.
fn query_text(value: &Value) -> String {
    match value {
        Value::Array(items) => items.iter().map(scalar_text).collect::<Vec<_>>().join(","),
        other => scalar_text(other),
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A `DataEntry` key: a string as is, a number as its text.
fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The `{name}` placeholders left in a path template.
fn placeholders(path: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        found.push(&after[..end]);
        rest = &after[end + 1..];
    }
    found
}

/// Replaces each `{name}` placeholder in `path` with `text`, percent-encoded.
fn substitute(path: &mut String, name: &str, text: &str) {
    let mut from = 0;
    while let Some(open) = path[from..].find('{').map(|at| from + at) {
        let close = open + 1 + name.len();
        if path[open + 1..].starts_with(name) && path[close..].starts_with('}') {
            let encoded = encode(text);
            path.replace_range(open..=close, &encoded);
            from = open + encoded.len();
        } else {
            from = open + 1;
        }
    }
}

/// Percent-encodes everything but `A-Z a-z 0-9 - _ ~`, so a value is always exactly one path
/// segment (`.` is encoded too: `..` cannot appear).
fn encode(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{Binding, Hints, RateClass, Route, Source};

    fn tool(method: Method, path: &str, bindings: Vec<(&str, Place)>, schema: Value) -> Tool {
        Tool {
            name: format!("test_{}", path.replace('/', "_")),
            title: "Test".to_owned(),
            description: "A test tool.".to_owned(),
            input_schema: schema,
            hints: Hints::default(),
            source: Source::Curated,
            route: Route {
                method,
                path: path.to_owned(),
                bindings: bindings
                    .into_iter()
                    .map(|(input, to)| Binding {
                        input: input.to_owned(),
                        to,
                    })
                    .collect(),
                paginated: false,
                class: RateClass::Write,
            },
            compiled: crate::tool::Compiled::default(),
        }
    }

    fn open_schema() -> Value {
        json!({"type": "object"})
    }

    #[test]
    fn path_query_and_opt_fields() {
        let tool = tool(
            Method::Get,
            "/projects/{project_gid}/tasks",
            vec![
                ("project", Place::Path("project_gid".to_owned())),
                (
                    "completed_since",
                    Place::Query("completed_since".to_owned()),
                ),
                ("tags", Place::Query("tags".to_owned())),
                ("limit", Place::Query("limit".to_owned())),
                ("archived", Place::Query("archived".to_owned())),
                ("fields", Place::OptFields),
                ("absent", Place::Query("absent".to_owned())),
            ],
            open_schema(),
        );
        let call = tool
            .prepare(&json!({
                "project": "123",
                "completed_since": "now",
                "tags": ["a", "b", 3],
                "limit": 50,
                "archived": false,
                "fields": ["name", "due_on"],
                "unbound": "ignored"
            }))
            .expect("binds");
        assert_eq!(call.path, "/projects/123/tasks");
        assert_eq!(
            call.query,
            [
                ("completed_since", "now"),
                ("tags", "a,b,3"),
                ("limit", "50"),
                ("archived", "false"),
                ("opt_fields", "name,due_on"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(call.data, None);
        assert!(call.idempotent);
    }

    #[test]
    fn path_values_are_one_encoded_segment() {
        let tool = tool(
            Method::Get,
            "/tasks/{task_gid}",
            vec![("task", Place::Path("task_gid".to_owned()))],
            open_schema(),
        );
        let call = tool
            .prepare(&json!({"task": "12/../3 x?é"}))
            .expect("binds");
        assert_eq!(call.path, "/tasks/12%2F%2E%2E%2F3%20x%3F%C3%A9");
        assert!(!call.path.contains("/../"));
        let call = tool.prepare(&json!({"task": ".."})).expect("binds");
        assert_eq!(call.path, "/tasks/%2E%2E");
    }

    #[test]
    fn a_placeholder_is_replaced_only_by_its_own_name() {
        let tool = tool(
            Method::Get,
            "/{a}/{ab}/{a}",
            vec![
                ("first", Place::Path("a".to_owned())),
                ("second", Place::Path("ab".to_owned())),
            ],
            open_schema(),
        );
        let call = tool
            .prepare(&json!({"first": "{ab}", "second": "2"}))
            .expect("binds");
        assert_eq!(call.path, "/%7Bab%7D/2/%7Bab%7D");
    }

    #[test]
    fn missing_path_value_names_the_input() {
        let tool = tool(
            Method::Delete,
            "/tasks/{task_gid}",
            vec![("task", Place::Path("task_gid".to_owned()))],
            open_schema(),
        );
        let violations = tool.prepare(&json!({})).expect_err("no task");
        assert_eq!(violations[0].field, "task");
        let violations = tool.prepare(&json!({"task": 5})).expect_err("not a string");
        assert_eq!(violations[0].field, "task");
        let call = tool.prepare(&json!({"task": "5"})).expect("binds");
        assert_eq!(call.data, None);
        assert!(!call.idempotent);
    }

    #[test]
    fn data_fields_entries_and_key_only() {
        let tool = tool(
            Method::Put,
            "/tasks/{task_gid}",
            vec![
                ("task", Place::Path("task_gid".to_owned())),
                ("name", Place::Data("name".to_owned())),
                ("assignee", Place::Data("assignee".to_owned())),
                ("custom_field", Place::KeyOnly),
                (
                    "custom_field_value",
                    Place::DataEntry {
                        field: "custom_fields".to_owned(),
                        key: "custom_field".to_owned(),
                    },
                ),
            ],
            open_schema(),
        );
        let call = tool
            .prepare(&json!({
                "task": "1",
                "name": "Write",
                "assignee": null,
                "custom_field": "42",
                "custom_field_value": 7
            }))
            .expect("binds");
        assert_eq!(
            call.data,
            Some(json!({"name": "Write", "assignee": null, "custom_fields": {"42": 7}}))
        );
        assert!(call.query.is_empty());
        assert!(call.idempotent);

        let violations = tool
            .prepare(&json!({"task": "1", "custom_field_value": 7}))
            .expect_err("no key");
        assert_eq!(violations[0].field, "custom_field");
    }

    #[test]
    fn data_object_is_the_whole_data() {
        let tool = tool(
            Method::Post,
            "/tasks",
            vec![("data", Place::DataObject)],
            open_schema(),
        );
        let call = tool
            .prepare(&json!({"data": {"name": "x", "projects": ["1"]}}))
            .expect("binds");
        assert_eq!(call.data, Some(json!({"name": "x", "projects": ["1"]})));
        assert!(!call.idempotent);
        let call = tool.prepare(&json!({})).expect("binds");
        assert_eq!(call.data, Some(json!({})));
    }

    #[test]
    fn input_is_validated_first() {
        let tool = tool(
            Method::Post,
            "/tasks",
            vec![("name", Place::Data("name".to_owned()))],
            json!({
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": false
            }),
        );
        let violations = tool.prepare(&json!({"nme": "x"})).expect_err("invalid");
        let mut fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["name", "nme"]);
        let violations = tool.prepare(&json!("x")).expect_err("not an object");
        assert_eq!(violations[0].field, "");
        assert_eq!(
            tool.prepare(&json!({"name": "x"})).expect("binds").data,
            Some(json!({"name": "x"}))
        );
    }
}
