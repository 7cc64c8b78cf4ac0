//! JSON Schema validation with violations that name their field, and close-name suggestions.

use std::fmt;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::{Location, LocationSegment};
use serde_json::Value;

use crate::Violation;

/// The longest rendering of an offending value or schema fragment put in a violation.
const MAX_DETAIL: usize = 200;

/// A compiled JSON Schema, also used by the executor for upstream MCP tools' schemas.
pub struct Validator {
    schema: Value,
    compiled: jsonschema::Validator,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// Compiles `schema` (a draft without `$schema` is treated as 2020-12); formats are
    /// annotations only, as the spec's default.
    pub fn new(schema: &Value) -> Result<Validator, String> {
        let compiled = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
        Ok(Validator {
            schema: schema.clone(),
            compiled,
        })
    }

    /// Every violation, each naming its field: instance path in dotted form (`name`,
    /// `data.due_on`, `tags.0`); for a missing required property the field is the missing
    /// property's full path; for an unknown property (`additionalProperties: false`) the field is
    /// that property's path; `""` only for the whole input (e.g. not an object).
    pub fn validate(&self, input: &Value) -> Result<(), Vec<Violation>> {
        // The common case, a valid input, without building any error.
        if self.compiled.is_valid(input) {
            return Ok(());
        }
        let mut violations = Vec::new();
        for error in self.compiled.iter_errors(input) {
            let path = dotted(error.instance_path());
            match error.kind() {
                ValidationErrorKind::Required { property } => {
                    let name = property
                        .as_str()
                        .map_or_else(|| property.to_string(), str::to_owned);
                    violations.push(Violation {
                        field: join(&path, &name),
                        description: "is required".to_owned(),
                    });
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    let allowed = self.allowed_properties(error.schema_path());
                    for name in unexpected {
                        violations.push(Violation {
                            field: join(&path, name),
                            description: unknown_property(name, &allowed),
                        });
                    }
                }
                ValidationErrorKind::Enum { options } => violations.push(Violation {
                    field: path,
                    description: format!(
                        "must be one of {}, not {}",
                        short(&options.to_string()),
                        short(&error.instance().to_string())
                    ),
                }),
                ValidationErrorKind::Type { kind } => {
                    let expected = match kind {
                        TypeKind::Single(t) => t.to_string(),
                        TypeKind::Multiple(set) => set
                            .iter()
                            .map(|t| t.to_string())
                            .collect::<Vec<_>>()
                            .join(" or "),
                    };
                    violations.push(Violation {
                        field: path,
                        description: format!(
                            "must be of type {expected}, not {}",
                            type_name(error.instance())
                        ),
                    });
                }
                _ => violations.push(Violation {
                    field: path,
                    description: short(&error.to_string()),
                }),
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    /// The property names declared next to the `additionalProperties` keyword at `schema_path`.
    fn allowed_properties(&self, schema_path: &Location) -> Vec<String> {
        let pointer = schema_path.as_str();
        let parent = pointer
            .strip_suffix("/additionalProperties")
            .unwrap_or(pointer);
        self.schema
            .pointer(&format!("{parent}/properties"))
            .and_then(Value::as_object)
            .map(|props| props.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// The message for an unknown property: a close match if there is one, else what is allowed.
fn unknown_property(name: &str, allowed: &[String]) -> String {
    let close = close_matches(name, allowed.iter().map(String::as_str));
    if let Some(best) = close.first() {
        format!("is not an accepted property; did you mean `{best}`?")
    } else if allowed.is_empty() {
        "is not an accepted property".to_owned()
    } else {
        format!(
            "is not an accepted property; accepted: {}",
            short(&allowed.join(", "))
        )
    }
}

/// `/data/tags/0` as `data.tags.0`.
fn dotted(location: &Location) -> String {
    location
        .segments()
        .map(|segment| match segment {
            LocationSegment::Property(p) => p.into_owned(),
            LocationSegment::Index(i) => i.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// `text`, cut to [`MAX_DETAIL`] characters.
fn short(text: &str) -> String {
    if text.chars().count() <= MAX_DETAIL {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX_DETAIL).collect();
        format!("{cut}…")
    }
}

/// How many suggestions [`close_matches`] returns at most.
const MAX_SUGGESTIONS: usize = 5;

/// Up to five candidates closest to `name`, best first: candidates containing `name` (or
/// contained in it) come first, then by Jaro-Winkler similarity; candidates that are not similar
/// at all are left out. Ties are broken by name, so the answer is deterministic.
pub fn close_matches<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let wanted = name.to_lowercase();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(bool, f64, &'a str)> = candidates
        .into_iter()
        .filter_map(|candidate| {
            let lower = candidate.to_lowercase();
            let contains = lower.contains(&wanted) || wanted.contains(&lower);
            let similarity = strsim::jaro_winkler(&wanted, &lower);
            (contains || similarity >= 0.8).then_some((contains, similarity, candidate))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(b.2)));
    scored.dedup_by(|a, b| a.2 == b.2);
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, _, candidate)| candidate)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "color": {"type": "string", "enum": ["red", "green"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "data": {
                    "type": "object",
                    "properties": {
                        "due_on": {"type": "string"},
                        "assignee": {"type": "string"}
                    },
                    "required": ["assignee"]
                }
            },
            "required": ["name"],
            "additionalProperties": false
        })
    }

    fn violations(input: Value) -> Vec<Violation> {
        let validator = Validator::new(&schema()).expect("schema compiles");
        let mut found = validator.validate(&input).expect_err("input is invalid");
        found.sort_by(|a, b| a.field.cmp(&b.field));
        found
    }

    fn fields(found: &[Violation]) -> Vec<&str> {
        found.iter().map(|v| v.field.as_str()).collect()
    }

    #[test]
    fn valid_input_passes() {
        let validator = Validator::new(&schema()).expect("schema compiles");
        validator
            .validate(&json!({"name": "x", "data": {"assignee": "me"}}))
            .expect("valid");
    }

    #[test]
    fn missing_required_names_the_full_path() {
        let found = violations(json!({"data": {"due_on": "2025-01-01"}}));
        assert_eq!(fields(&found), ["data.assignee", "name"]);
        assert!(found.iter().all(|v| v.description == "is required"));
    }

    #[test]
    fn wrong_type_names_the_nested_path() {
        let found = violations(
            json!({"name": "x", "data": {"assignee": "me", "due_on": 5}, "tags": ["a", 1]}),
        );
        assert_eq!(fields(&found), ["data.due_on", "tags.1"]);
        assert_eq!(found[0].description, "must be of type string, not integer");
    }

    #[test]
    fn unknown_property_is_named_with_a_suggestion() {
        let found = violations(json!({"name": "x", "nmae": "y", "zzzzzz": 1}));
        assert_eq!(fields(&found), ["nmae", "zzzzzz"]);
        assert!(
            found[0].description.contains("did you mean `name`"),
            "{found:?}"
        );
        assert!(found[1].description.contains("accepted: "), "{found:?}");
    }

    #[test]
    fn enum_lists_the_options() {
        let found = violations(json!({"name": "x", "color": "blue"}));
        assert_eq!(fields(&found), ["color"]);
        assert!(
            found[0].description.contains(r#"["red","green"]"#),
            "{found:?}"
        );
    }

    #[test]
    fn a_non_object_is_the_whole_input() {
        let found = violations(json!([1]));
        assert_eq!(fields(&found), [""]);
    }

    #[test]
    fn bad_schema_is_an_error() {
        Validator::new(&json!({"type": "no-such-type"})).expect_err("does not compile");
    }

    #[test]
    fn close_matches_prefers_substrings_then_similarity() {
        let names = [
            "asana_api_get_task",
            "asana_api_get_tasks",
            "asana_api_delete_task",
            "asana_api_get_user",
        ];
        assert_eq!(
            close_matches("asana_api_get_tsk", names)[0],
            "asana_api_get_task"
        );
        assert_eq!(
            close_matches("get_task", names)[..2],
            ["asana_api_get_task", "asana_api_get_tasks"]
        );
        assert!(close_matches("completely_unrelated", names).len() <= MAX_SUGGESTIONS);
        assert!(close_matches("", names).is_empty());
    }
}
