//! One tool per operation of an OpenAPI 3.0 document (Asana's spec): names, descriptions, JSON
//! Schemas converted from OpenAPI schemas, and bindings.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::{Binding, Hints, Method, Place, RateClass, Route, Source, Tool};

/// How many `$ref`s deep a schema is inlined; deeper (or recursive) references become a bare
/// type.
const MAX_REF_DEPTH: usize = 4;
/// The longest description kept from an operation's description.
const MAX_OPERATION_TEXT: usize = 600;
/// The longest description kept on a schema or parameter.
const MAX_SCHEMA_TEXT: usize = 300;

/// What a tool's description says about `multipart/form-data` bodies.
const MULTIPART_NOTE: &str = "File uploads are not supported through JSON: only URL \
    attachments (`resource_subtype` `external` with `url` and `name`).";

/// Generates the tools of every operation of an OpenAPI document (YAML text), sorted by name.
pub fn generate(openapi_yaml: &str) -> Result<Vec<Tool>, String> {
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(openapi_yaml).map_err(|e| format!("the spec does not parse: {e}"))?;
    let root = to_json(yaml)?;
    let spec = Spec { root: &root };
    let paths = root
        .get("paths")
        .and_then(Value::as_object)
        .ok_or("the spec has no `paths`")?;
    let mut tools = BTreeMap::new();
    for (path, item) in paths {
        let item = spec.resolve(item)?;
        let shared = item
            .get("parameters")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (key, operation) in item.as_object().into_iter().flatten() {
            let method = match key.as_str() {
                "get" => Method::Get,
                "post" => Method::Post,
                "put" => Method::Put,
                "delete" => Method::Delete,
                "parameters" | "summary" | "description" | "servers" => continue,
                other => return Err(format!("{path}: unsupported method `{other}`")),
            };
            let tool = spec
                .tool(path, method, shared, operation)
                .map_err(|e| format!("{} {path}: {e}", key.to_uppercase()))?;
            if tools.contains_key(&tool.name) {
                return Err(format!("two operations make the tool `{}`", tool.name));
            }
            tools.insert(tool.name.clone(), tool);
        }
    }
    Ok(tools.into_values().collect())
}

/// `getTask` as `get_task`, `getTaskForCustomID` as `get_task_for_custom_id`: a word starts at
/// an upper-case letter after a lower-case letter or digit, and at the last upper-case letter of
/// an acronym followed by a lower-case letter.
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let previous = chars[i - 1];
            let next_is_lower = chars.get(i + 1).is_some_and(char::is_ascii_lowercase);
            if previous.is_ascii_lowercase()
                || previous.is_ascii_digit()
                || (previous.is_ascii_uppercase() && next_is_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// YAML as JSON; map keys that are numbers or booleans (e.g. response codes) become strings.
fn to_json(yaml: serde_yaml::Value) -> Result<Value, String> {
    Ok(match yaml {
        serde_yaml::Value::Null => Value::Null,
        serde_yaml::Value::Bool(b) => Value::Bool(b),
        serde_yaml::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            }
        }
        serde_yaml::Value::String(s) => Value::String(s),
        serde_yaml::Value::Sequence(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        serde_yaml::Value::Mapping(mapping) => {
            let mut object = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    serde_yaml::Value::String(s) => s,
                    serde_yaml::Value::Number(n) => n.to_string(),
                    serde_yaml::Value::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported map key {other:?}")),
                };
                object.insert(key, to_json(value)?);
            }
            Value::Object(object)
        }
        serde_yaml::Value::Tagged(tagged) => to_json(tagged.value)?,
    })
}

/// The whole document, for resolving `$ref`s.
struct Spec<'a> {
    root: &'a Value,
}

/// One operation parameter, resolved.
struct Parameter<'a> {
    name: &'a str,
    location: &'a str,
    required: bool,
    raw: &'a Value,
}

impl<'a> Spec<'a> {
    /// The target of a local `$ref` such as `#/components/schemas/Task`.
    fn lookup(&self, reference: &str) -> Result<&'a Value, String> {
        reference
            .strip_prefix('#')
            .and_then(|pointer| self.root.pointer(pointer))
            .ok_or_else(|| format!("unresolvable $ref `{reference}`"))
    }

    /// `value`, or what its `$ref` (chain) points to.
    fn resolve(&self, mut value: &'a Value) -> Result<&'a Value, String> {
        for _ in 0..16 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(reference) => value = self.lookup(reference)?,
                None => return Ok(value),
            }
        }
        Err("a $ref chain is too long".to_owned())
    }

    fn tool(
        &self,
        path: &str,
        method: Method,
        shared: &'a [Value],
        operation: &'a Value,
    ) -> Result<Tool, String> {
        let id = operation
            .get("operationId")
            .and_then(Value::as_str)
            .ok_or("no operationId")?;
        let name = format!("asana_api_{}", snake_case(id));
        let summary = operation
            .get("summary")
            .and_then(Value::as_str)
            .unwrap_or(id)
            .trim()
            .to_owned();

        let mut properties = Map::new();
        let mut required = Vec::new();
        let mut bindings = Vec::new();
        let mut query_names = Vec::new();
        for parameter in self.parameters(shared, operation)? {
            let (schema, to) = match (parameter.location, parameter.name) {
                ("query", "opt_pretty") => continue,
                ("query", "opt_fields") => (self.opt_fields(parameter.raw)?, Place::OptFields),
                ("query", query) => {
                    query_names.push(query);
                    (
                        self.parameter_schema(parameter.raw)?,
                        Place::Query(query.to_owned()),
                    )
                }
                ("path", placeholder) => {
                    let mut schema = self.parameter_schema(parameter.raw)?;
                    schema.insert("type".to_owned(), json!("string"));
                    if is_numeric_gid(placeholder) {
                        schema.insert("pattern".to_owned(), json!(GID_PATTERN));
                    }
                    (schema, Place::Path(placeholder.to_owned()))
                }
                (other, _) => {
                    return Err(format!(
                        "parameter `{}` is in `{other}`, which tools cannot send",
                        parameter.name
                    ));
                }
            };
            if properties
                .insert(parameter.name.to_owned(), Value::Object(schema))
                .is_some()
            {
                return Err(format!("two parameters are named `{}`", parameter.name));
            }
            if parameter.required || parameter.location == "path" {
                required.push(parameter.name.to_owned());
            }
            bindings.push(Binding {
                input: parameter.name.to_owned(),
                to,
            });
        }

        let mut multipart = false;
        if let Some(body) = operation.get("requestBody") {
            let body = self.resolve(body)?;
            let (data, is_multipart) = self.body_data(body)?;
            multipart = is_multipart;
            if properties.insert("data".to_owned(), data).is_some() {
                return Err("a parameter is named `data`, like the body".to_owned());
            }
            if body.get("required").and_then(Value::as_bool) == Some(true) {
                required.push("data".to_owned());
            }
            bindings.push(Binding {
                input: "data".to_owned(),
                to: Place::DataObject,
            });
        }

        let mut input_schema = Map::new();
        input_schema.insert("type".to_owned(), json!("object"));
        input_schema.insert("properties".to_owned(), Value::Object(properties));
        if !required.is_empty() {
            input_schema.insert("required".to_owned(), json!(required));
        }
        input_schema.insert("additionalProperties".to_owned(), json!(false));

        let class = if id == "searchTasksForWorkspace" || path.ends_with("/search") {
            RateClass::Search
        } else if method == Method::Get {
            RateClass::Read
        } else {
            RateClass::Write
        };
        let hints = Hints {
            read_only: method == Method::Get,
            destructive: method == Method::Delete,
            idempotent: method != Method::Post,
            open_world: false,
        };
        let description = operation_description(
            &summary,
            operation.get("description").and_then(Value::as_str),
            multipart,
            method,
            path,
        );
        Ok(Tool {
            name,
            title: summary,
            description,
            input_schema: sorted(Value::Object(input_schema)),
            hints,
            source: Source::Generated,
            route: Route {
                method,
                path: path.to_owned(),
                bindings,
                paginated: query_names.contains(&"limit") && query_names.contains(&"offset"),
                class,
            },
            compiled: crate::tool::Compiled::default(),
        })
    }

    /// The path item's parameters, then the operation's; an operation parameter replaces a path
    /// item parameter of the same name and location.
    fn parameters(
        &self,
        shared: &'a [Value],
        operation: &'a Value,
    ) -> Result<Vec<Parameter<'a>>, String> {
        let own = operation
            .get("parameters")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        let mut merged: Vec<Parameter<'a>> = Vec::new();
        for raw in shared.iter().chain(own) {
            let raw = self.resolve(raw)?;
            let name = raw
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a parameter has no name")?;
            let location = raw
                .get("in")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("parameter `{name}` has no `in`"))?;
            let parameter = Parameter {
                name,
                location,
                required: raw.get("required").and_then(Value::as_bool) == Some(true),
                raw,
            };
            match merged
                .iter_mut()
                .find(|p| p.name == name && p.location == location)
            {
                Some(existing) => *existing = parameter,
                None => merged.push(parameter),
            }
        }
        Ok(merged)
    }

    /// A parameter's schema, with the parameter's description.
    fn parameter_schema(&self, raw: &'a Value) -> Result<Map<String, Value>, String> {
        let schema = match raw.get("schema") {
            Some(schema) => self.schema(schema, &mut Vec::new())?,
            None => json!({"type": "string"}),
        };
        let mut schema = match schema {
            Value::Object(object) => object,
            _ => Map::new(),
        };
        if let Some(text) = raw.get("description").and_then(Value::as_str) {
            schema.insert(
                "description".to_owned(),
                json!(shorten(text, MAX_SCHEMA_TEXT)),
            );
        }
        Ok(schema)
    }

    /// `opt_fields`: an array of field names (the spec's enum kept when it has one).
    fn opt_fields(&self, raw: &'a Value) -> Result<Map<String, Value>, String> {
        let mut schema = self.parameter_schema(raw)?;
        schema.insert("type".to_owned(), json!("array"));
        let items = schema
            .remove("items")
            .filter(|items| items.get("type") == Some(&json!("string")))
            .unwrap_or_else(|| json!({"type": "string"}));
        schema.insert("items".to_owned(), items);
        schema.insert(
            "description".to_owned(),
            json!(
                "Optional properties to include in the response, beyond the default (compact) \
                 ones; dotted paths reach into related objects."
            ),
        );
        Ok(schema)
    }

    /// The schema of a request body's `data` object, and whether the body is multipart.
    fn body_data(&self, body: &'a Value) -> Result<(Value, bool), String> {
        let content = body
            .get("content")
            .and_then(Value::as_object)
            .ok_or("the request body has no content")?;
        let description = body
            .get("description")
            .and_then(Value::as_str)
            .map(|text| shorten(text, MAX_SCHEMA_TEXT));
        if let Some(json_body) = content.get("application/json") {
            let schema = self.resolve(json_body.get("schema").ok_or("a body has no schema")?)?;
            let data = schema
                .pointer("/properties/data")
                .ok_or("the JSON request body has no `data` property")?;
            let mut data = self.schema(data, &mut Vec::new())?;
            if let (Some(object), Some(text)) = (data.as_object_mut(), description) {
                object.insert("description".to_owned(), json!(text));
            }
            Ok((data, false))
        } else if let Some(form) = content.get("multipart/form-data") {
            let schema = form.get("schema").ok_or("a body has no schema")?;
            let mut data = self.schema(schema, &mut Vec::new())?;
            if let Some(object) = data.as_object_mut() {
                object.insert("description".to_owned(), json!(MULTIPART_NOTE));
            }
            Ok((data, true))
        } else {
            let types: Vec<_> = content.keys().map(String::as_str).collect();
            Err(format!("unsupported request body types {types:?}"))
        }
    }

    /// An OpenAPI 3.0 schema as JSON Schema: `$ref`s inlined (up to [`MAX_REF_DEPTH`] deep,
    /// recursion cut), `allOf` of objects merged, `nullable` as a `null` type, read-only and
    /// binary properties dropped, examples and extensions dropped, descriptions shortened.
    fn schema(&self, schema: &'a Value, stack: &mut Vec<&'a str>) -> Result<Value, String> {
        let (converted, is_nullable) = self.schema_parts(schema, stack)?;
        Ok(if is_nullable {
            nullable(converted)
        } else {
            Value::Object(converted)
        })
    }

    /// [`Spec::schema`] without applying `nullable`: the schema, and whether it is nullable.
    fn schema_parts(
        &self,
        schema: &'a Value,
        stack: &mut Vec<&'a str>,
    ) -> Result<(Map<String, Value>, bool), String> {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let target = self.lookup(reference)?;
            if stack.contains(&reference) || stack.len() >= MAX_REF_DEPTH {
                let mut cut = Map::new();
                if let Some(kind) = target.get("type") {
                    cut.insert("type".to_owned(), kind.clone());
                }
                if let Some(text) = target.get("description").and_then(Value::as_str) {
                    cut.insert(
                        "description".to_owned(),
                        json!(shorten(text, MAX_SCHEMA_TEXT)),
                    );
                }
                return Ok((cut, false));
            }
            stack.push(reference);
            let converted = self.schema_parts(target, stack);
            stack.pop();
            return converted;
        }
        let Some(source) = schema.as_object() else {
            return Err(format!("a schema is not an object: {schema}"));
        };
        let mut is_nullable = source.get("nullable").and_then(Value::as_bool) == Some(true);
        let mut out = Map::new();
        let mut all_of = None;
        for (key, value) in source {
            match key.as_str() {
                "type" | "enum" | "format" | "minimum" | "maximum" | "minLength" | "maxLength"
                | "pattern" | "minItems" | "maxItems" | "uniqueItems" | "required" => {
                    out.insert(key.clone(), value.clone());
                }
                "default" if !value.is_object() && !value.is_array() => {
                    out.insert(key.clone(), value.clone());
                }
                "description" => {
                    if let Some(text) = value.as_str() {
                        out.insert(key.clone(), json!(shorten(text, MAX_SCHEMA_TEXT)));
                    }
                }
                "items" => {
                    out.insert(key.clone(), self.schema(value, stack)?);
                }
                "additionalProperties" => {
                    let converted = if value.is_object() {
                        self.schema(value, stack)?
                    } else {
                        value.clone()
                    };
                    out.insert(key.clone(), converted);
                }
                "properties" => {
                    let mut properties = Map::new();
                    for (name, property) in value.as_object().into_iter().flatten() {
                        if self.is_read_only(property)? {
                            continue;
                        }
                        let converted = self.schema(property, stack)?;
                        if converted.get("format") == Some(&json!("binary")) {
                            continue;
                        }
                        properties.insert(name.clone(), converted);
                    }
                    out.insert(key.clone(), Value::Object(properties));
                }
                "oneOf" | "anyOf" => {
                    let parts = value
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|part| self.schema(part, stack))
                        .collect::<Result<Vec<_>, _>>()?;
                    out.insert(key.clone(), Value::Array(parts));
                }
                "allOf" => {
                    let mut parts = Vec::new();
                    for part in value.as_array().into_iter().flatten() {
                        let (converted, part_nullable) = self.schema_parts(part, stack)?;
                        is_nullable |= part_nullable;
                        if !converted.is_empty() {
                            parts.push(converted);
                        }
                    }
                    all_of = Some(parts);
                }
                _ => {}
            }
        }
        if let Some(parts) = all_of {
            merge_all_of(&mut out, parts);
        }
        keep_known_required(&mut out);
        Ok((out, is_nullable))
    }

    /// A property that only responses carry: marked `readOnly` itself, through its `$ref`, or in
    /// one of its `allOf` parts.
    fn is_read_only(&self, property: &'a Value) -> Result<bool, String> {
        let target = self.resolve(property)?;
        let parts = target
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|part| self.resolve(part))
            .collect::<Result<Vec<_>, _>>()?;
        Ok([property, target]
            .into_iter()
            .chain(parts)
            .any(|schema| schema.get("readOnly").and_then(Value::as_bool) == Some(true)))
    }
}

/// Merges `allOf` parts into `out` when they are all plain object schemas (or bare
/// descriptions), else keeps `allOf`. The description is `out`'s own, else the last part's.
fn merge_all_of(out: &mut Map<String, Value>, parts: Vec<Map<String, Value>>) {
    const MERGEABLE: [&str; 5] = [
        "type",
        "properties",
        "required",
        "description",
        "additionalProperties",
    ];
    let plain = parts.iter().all(|part| {
        part.keys().all(|k| MERGEABLE.contains(&k.as_str()))
            && part.get("type").is_none_or(|t| t == "object")
            && part
                .get("additionalProperties")
                .is_none_or(|a| *a == json!(true))
    });
    if !plain {
        out.insert(
            "allOf".to_owned(),
            Value::Array(parts.into_iter().map(Value::Object).collect()),
        );
        return;
    }
    if parts
        .iter()
        .any(|part| part.contains_key("type") || part.contains_key("properties"))
    {
        out.insert("type".to_owned(), json!("object"));
    }
    let mut description = None;
    for part in parts {
        for (key, value) in part {
            match key.as_str() {
                "properties" => {
                    let properties = out
                        .entry("properties")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let (Some(into), Value::Object(from)) = (properties.as_object_mut(), value) {
                        into.extend(from);
                    }
                }
                "required" => {
                    let required = out.entry("required").or_insert_with(|| json!([]));
                    if let (Some(into), Value::Array(from)) = (required.as_array_mut(), value) {
                        for name in from {
                            if !into.contains(&name) {
                                into.push(name);
                            }
                        }
                    }
                }
                "description" => description = Some(value),
                _ => {}
            }
        }
    }
    if let Some(description) = description {
        out.entry("description").or_insert(description);
    }
}

/// Drops `required` names that are not among the (request-side) properties.
fn keep_known_required(out: &mut Map<String, Value>) {
    let Some(Value::Object(properties)) = out.get("properties") else {
        return;
    };
    let known: Vec<Value> = out
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|name| name.as_str().is_some_and(|n| properties.contains_key(n)))
        .cloned()
        .collect();
    if known.is_empty() {
        out.remove("required");
    } else {
        out.insert("required".to_owned(), Value::Array(known));
    }
}

/// `schema`, also allowing `null`.
fn nullable(mut schema: Map<String, Value>) -> Value {
    if let Some(values) = schema.get_mut("enum").and_then(Value::as_array_mut)
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    match schema.get("type").cloned() {
        Some(Value::String(kind)) => {
            schema.insert("type".to_owned(), json!([kind, "null"]));
            Value::Object(schema)
        }
        Some(Value::Array(mut kinds)) => {
            if !kinds.contains(&json!("null")) {
                kinds.push(json!("null"));
            }
            schema.insert("type".to_owned(), Value::Array(kinds));
            Value::Object(schema)
        }
        _ => json!({"anyOf": [schema, {"type": "null"}]}),
    }
}

/// The summary, the description's first paragraph of prose, the required scope, and the route.
fn operation_description(
    summary: &str,
    description: Option<&str>,
    multipart: bool,
    method: Method,
    path: &str,
) -> String {
    let mut text = summary.trim_end_matches('.').to_owned();
    text.push('.');
    let mut scope = None;
    let mut first = None;
    for paragraph in paragraphs(&strip_tables(description.unwrap_or_default())) {
        let plain = plain_text(&paragraph);
        if let Some(rest) = plain.strip_prefix("Required scope") {
            scope.get_or_insert_with(|| {
                rest.trim_start_matches('s')
                    .trim_start_matches(':')
                    .trim()
                    .trim_end_matches('.')
                    .to_owned()
            });
        } else if !plain.is_empty() && first.is_none() {
            first = Some(plain);
        }
    }
    if let Some(first) = first {
        let mut first = cap(&first, MAX_OPERATION_TEXT);
        if !first.ends_with(['.', '!', '?', '…', ':']) {
            first.push('.');
        }
        if first.starts_with(summary.trim_end_matches('.')) {
            text = first;
        } else {
            text.push(' ');
            text.push_str(&first);
        }
    }
    if let Some(scope) = scope.filter(|scope| !scope.is_empty()) {
        text.push_str(&format!(" Required scope: {scope}."));
    }
    if multipart {
        text.push(' ');
        text.push_str(MULTIPART_NOTE);
    }
    let verb = match method {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
    };
    text.push_str(&format!(" Calls {verb} {path}."));
    text
}

/// A schema or parameter description: its text as one plain paragraph, capped.
fn shorten(text: &str, limit: usize) -> String {
    let text = plain_text(&strip_tables(text));
    cap(&text, limit)
}

/// Paragraphs: runs of lines separated by blank lines or Markdown headings (which are dropped).
fn paragraphs(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            if !current.is_empty() {
                found.push(std::mem::take(&mut current));
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.is_empty() {
        found.push(current);
    }
    found
}

/// `text` without its HTML tables.
fn strip_tables(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<table") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</table>") {
            Some(end) => rest = &rest[start + end + "</table>".len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// HTML tags removed, Markdown links reduced to their text, entities decoded, whitespace
/// collapsed.
fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '<' => {
                for inner in chars.by_ref() {
                    if inner == '>' {
                        break;
                    }
                }
            }
            ']' if chars.peek() == Some(&'(') => {
                for inner in chars.by_ref() {
                    if inner == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            other => out.push(other),
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to at most `limit` characters: at the last sentence end if that keeps most of it,
/// else at a word, with an ellipsis.
fn cap(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let cut: String = text.chars().take(limit).collect();
    if let Some(end) = cut.rfind(". ").filter(|&end| end > limit / 2) {
        return cut[..=end].to_owned();
    }
    let word = cut.rfind(' ').unwrap_or(cut.len());
    format!("{}…", cut[..word].trim_end())
}

/// `value` with every object's keys in sorted order, whatever map type serde_json is built with.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(object) => {
            let entries: BTreeMap<String, Value> = object
                .into_iter()
                .map(|(key, value)| (key, sorted(value)))
                .collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// What an object gid looks like: Asana's gids are strings of digits.
const GID_PATTERN: &str = "^[0-9]+$";

/// Whether a path placeholder takes only an object gid. `user_gid` also takes `me` or an
/// email; `custom_id` is a task's custom id.
fn is_numeric_gid(placeholder: &str) -> bool {
    placeholder.ends_with("_gid") && placeholder != "user_gid"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_become_snake_case() {
        assert_eq!(snake_case("getTask"), "get_task");
        assert_eq!(snake_case("getTaskForCustomID"), "get_task_for_custom_id");
        assert_eq!(snake_case("getURLForX"), "get_url_for_x");
        assert_eq!(snake_case("getV1Tasks"), "get_v1_tasks");
        assert_eq!(snake_case("search"), "search");
    }

    #[test]
    fn descriptions_are_plain_and_capped() {
        let text = operation_description(
            "Get a task",
            Some(
                "<b>Required scope: </b><code>tasks:read</code>\n\n<table>\n<tr><td>x</td></tr>\n\
                 </table>\n\nReturns the [complete](https://x.y) task\nrecord &amp; more.\n## Heading\nMore.",
            ),
            false,
            Method::Get,
            "/tasks/{task_gid}",
        );
        assert_eq!(
            text,
            "Get a task. Returns the complete task record & more. Required scope: tasks:read. \
             Calls GET /tasks/{task_gid}."
        );
        let text = operation_description(
            "Add a user",
            Some("Add a user to a team\n\nMore."),
            true,
            Method::Post,
            "/users",
        );
        assert_eq!(
            text,
            format!("Add a user to a team. {MULTIPART_NOTE} Calls POST /users.")
        );
        let long = "word ".repeat(200);
        assert!(cap(&long, 50).chars().count() <= 51);
    }

    #[test]
    fn schemas_are_converted() {
        let spec = serde_json::json!({
            "components": {"schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "gid": {"type": "string", "readOnly": true},
                        "child": {"$ref": "#/components/schemas/Node"},
                        "due_on": {"type": "string", "nullable": true, "example": "2020-01-01"}
                    },
                    "required": ["gid", "due_on"]
                },
                "Named": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Node"},
                        {"type": "object", "properties": {"name": {"type": "string"}}, "x-env": 1}
                    ]
                }
            }}
        });
        let spec_ref = Spec { root: &spec };
        let converted = spec_ref
            .schema(&spec["components"]["schemas"]["Named"], &mut Vec::new())
            .expect("converts");
        assert_eq!(converted["type"], "object");
        assert_eq!(converted["required"], json!(["due_on"]));
        assert_eq!(
            converted["properties"]["due_on"],
            json!({"type": ["string", "null"]})
        );
        assert!(converted["properties"].get("gid").is_none());
        assert!(converted["properties"].get("name").is_some());
        assert_eq!(converted["properties"]["child"]["type"], "object");
    }

    const SMALL_SPEC: &str = r#"
openapi: 3.0.0
components:
  parameters:
    item_gid:
      name: item_gid
      in: path
      required: true
      schema: {type: string}
paths:
  /items/{item_gid}/children:
    parameters:
      - $ref: '#/components/parameters/item_gid'
      - {name: limit, in: query, schema: {type: integer}}
      - {name: opt_pretty, in: query, schema: {type: boolean}}
    get:
      operationId: getChildren
      summary: Get children
      parameters:
        - {name: limit, in: query, required: true, schema: {type: integer}}
        - {name: offset, in: query, schema: {type: string}}
      responses:
        200: {description: OK}
    put:
      operationId: updateChildren
      summary: Update children
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              properties:
                data: {type: object, properties: {name: {type: string}}}
      responses:
        200: {description: OK}
"#;

    #[test]
    fn parameters_merge_and_operations_become_tools() {
        let tools = generate(SMALL_SPEC).expect("generates");
        let names: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["asana_api_get_children", "asana_api_update_children"]
        );
        let get = &tools[0];
        assert_eq!(get.input_schema["required"], json!(["item_gid", "limit"]));
        assert!(get.input_schema["properties"].get("opt_pretty").is_none());
        assert!(get.route.paginated);
        assert_eq!(get.route.class, RateClass::Read);
        let inputs: Vec<_> = get
            .route
            .bindings
            .iter()
            .map(|b| b.input.as_str())
            .collect();
        assert_eq!(inputs, ["item_gid", "limit", "offset"]);
        let put = &tools[1];
        assert_eq!(put.input_schema["required"], json!(["item_gid", "data"]));
        assert_eq!(
            put.route.bindings.last().map(|b| &b.to),
            Some(&Place::DataObject)
        );
        assert!(put.hints.idempotent && !put.hints.read_only);
    }

    #[test]
    fn colliding_names_fail() {
        let spec = SMALL_SPEC.replace("updateChildren", "get_children");
        let error = generate(&spec).expect_err("collision");
        assert!(error.contains("asana_api_get_children"), "{error}");
    }
}
