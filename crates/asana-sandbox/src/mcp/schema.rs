//! Checks tool arguments against a tool's `inputSchema`: the subset of JSON Schema the sandbox's
//! tools use (`type`, `properties`, `required`, `additionalProperties`, `items`, `enum`,
//! `minItems`/`maxItems`, `minLength`, `minimum`/`maximum`). Other keywords are accepted and
//! ignored, so a schema set through the control API never makes a call fail for the wrong reason.

use serde_json::Value;

/// The first way `value` breaks `schema`, as a readable message naming the argument path.
pub fn check(schema: &Value, value: &Value) -> Result<(), String> {
    check_at(schema, value, "arguments")
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn check_at(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Ok(());
    };
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(name)) => vec![name.as_str()],
        Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        return Err(format!("{path}: expected {}", types.join(" or ")));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!("{path}: must be one of {}", listed.join(", ")));
    }
    if let (Some(min), Some(text)) = (
        schema.get("minLength").and_then(Value::as_u64),
        value.as_str(),
    ) && (text.chars().count() as u64) < min
    {
        return Err(format!("{path}: must be at least {min} characters"));
    }
    if let Some(number) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && number < min
        {
            return Err(format!("{path}: must be at least {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && number > max
        {
            return Err(format!("{path}: must be at most {max}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            return Err(format!("{path}: needs at least {min} item(s)"));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && (items.len() as u64) > max
        {
            return Err(format!("{path}: takes at most {max} items"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check_at(item_schema, item, &format!("{path}[{i}]"))?;
            }
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                return Err(format!("{path}.{name}: required"));
            }
        }
        for (name, item) in object {
            let item_path = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(property) => check_at(property, item, &item_path)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{item_path}: unknown argument"));
                    }
                    Some(extra @ Value::Object(_)) => check_at(extra, item, &item_path)?,
                    _ => {}
                },
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reports_the_first_violation_with_its_path() {
        let schema = json!({
            "type": "object",
            "properties": {
                "tasks": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string", "minLength": 1},
                                   "due_on": {"type": ["string", "null"]}},
                    "required": ["name"],
                    "additionalProperties": false,
                }},
                "kind": {"enum": ["a", "b"]},
                "count": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            "required": ["tasks"],
        });
        assert_eq!(
            check(&schema, &json!({"tasks": [{"name": "x", "due_on": null}]})),
            Ok(())
        );
        assert_eq!(
            check(&schema, &json!({})),
            Err("arguments.tasks: required".into())
        );
        assert_eq!(
            check(&schema, &json!({"tasks": [{"name": ""}]})),
            Err("arguments.tasks[0].name: must be at least 1 characters".into())
        );
        assert_eq!(
            check(&schema, &json!({"tasks": [{"name": "x", "color": 1}]})),
            Err("arguments.tasks[0].color: unknown argument".into())
        );
        assert_eq!(
            check(&schema, &json!({"tasks": [], "kind": "a"})),
            Err("arguments.tasks: needs at least 1 item(s)".into())
        );
        assert!(check(&schema, &json!({"tasks": [{"name": "x"}], "kind": "c"})).is_err());
        assert!(check(&schema, &json!({"tasks": [{"name": "x"}], "count": 0})).is_err());
        assert!(check(&schema, &json!({"tasks": [{"name": "x"}], "count": 1.5})).is_err());
        assert!(check(&schema, &json!({"tasks": "x"})).is_err());
    }
}
