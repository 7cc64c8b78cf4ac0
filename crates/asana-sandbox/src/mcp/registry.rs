//! The tool list a client sees: Asana's V2 tools to start with, changeable at runtime through
//! the control API (add a tool with a fixed result, remove one, edit a definition). Every
//! change bumps a generation (which invalidates `tools/list` cursors) and tells the open GET
//! and `subscriptions/listen` streams.

use std::sync::{Mutex, MutexGuard};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::tools::Builtin;
use crate::error::ApiError;

/// What calling a tool does.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// One of the sandbox's Asana tools, backed by the world.
    Builtin(Builtin),
    /// A tool added through the control API: every call returns this `CallToolResult`.
    Fixed(Value),
}

/// One tool: its definition as `tools/list` shows it, and what a call does.
#[derive(Debug, Clone)]
pub struct Tool {
    pub definition: Value,
    pub behaviour: Behaviour,
}

impl Tool {
    pub fn name(&self) -> &str {
        self.definition["name"].as_str().unwrap_or_default()
    }

    /// Whether a call counts as a write for the limits: the Asana tools know; a configured tool
    /// is a write unless annotated read-only.
    pub fn writes(&self) -> bool {
        match &self.behaviour {
            Behaviour::Builtin(builtin) => builtin.writes(),
            Behaviour::Fixed(_) => self.definition["annotations"]["readOnlyHint"] != true,
        }
    }

    /// Whether a call counts against the search budget.
    pub fn searches(&self) -> bool {
        self.behaviour == Behaviour::Builtin(Builtin::SearchObjects)
    }
}

#[derive(Debug)]
struct State {
    tools: Vec<Tool>,
    generation: u64,
}

/// The mutable tool list, in a stable order (Asana's tools first, added ones after).
#[derive(Debug)]
pub struct Registry {
    state: Mutex<State>,
    changed: broadcast::Sender<()>,
}

/// The fields a tool definition may have (2025-11-25 and 2026-07-28 `Tool`).
const DEFINITION_FIELDS: [&str; 9] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
    "icons",
    "execution",
    "_meta",
];

/// The fields `PATCH` may change.
const EDITABLE_FIELDS: [&str; 5] = [
    "title",
    "description",
    "inputSchema",
    "annotations",
    "outputSchema",
];

impl Registry {
    /// The registry with Asana's V2 tools.
    pub fn new() -> Self {
        let tools = Builtin::ALL
            .iter()
            .map(|b| Tool {
                definition: b.definition(),
                behaviour: Behaviour::Builtin(*b),
            })
            .collect();
        Self {
            state: Mutex::new(State {
                tools,
                generation: 1,
            }),
            changed: broadcast::channel(64).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes on every change of the list.
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changed.subscribe()
    }

    fn bump(&self, state: &mut State) {
        state.generation += 1;
        // Nobody listening is fine.
        let _ = self.changed.send(());
    }

    pub fn get(&self, name: &str) -> Option<Tool> {
        self.lock().tools.iter().find(|t| t.name() == name).cloned()
    }

    /// One `tools/list` page of `size` (0: everything) after `cursor`, and the next cursor.
    /// A cursor from before a change of the list is refused, so a client never stitches two
    /// versions of the list together.
    pub fn page(
        &self,
        cursor: Option<&str>,
        size: usize,
    ) -> Result<(Vec<Value>, Option<String>), String> {
        let state = self.lock();
        let start = match cursor {
            None => 0,
            Some(cursor) => decode_cursor(cursor)
                .filter(|(generation, start)| {
                    *generation == state.generation && *start <= state.tools.len()
                })
                .map(|(_, start)| start)
                .ok_or("invalid or stale cursor: the tool list changed or the cursor is not ours; list again from the start")?,
        };
        let size = if size == 0 { state.tools.len() } else { size };
        let end = (start + size).min(state.tools.len());
        let page = state.tools[start..end]
            .iter()
            .map(|t| t.definition.clone())
            .collect();
        let next = (end < state.tools.len()).then(|| encode_cursor(state.generation, end));
        Ok((page, next))
    }

    /// Every tool as the control API shows it.
    pub fn describe(&self) -> Vec<Value> {
        self.lock()
            .tools
            .iter()
            .map(|t| match &t.behaviour {
                Behaviour::Builtin(_) => json!({"kind": "asana", "definition": t.definition}),
                Behaviour::Fixed(result) => {
                    json!({"kind": "fixed", "definition": t.definition, "result": result})
                }
            })
            .collect()
    }

    /// Adds a tool whose calls return `result` (default: a text block saying "ok").
    pub fn add(&self, definition: Value, result: Option<Value>) -> Result<Value, ApiError> {
        check_definition(&definition).map_err(ApiError::bad_request)?;
        let result = result.unwrap_or_else(|| json!({"content": [{"type": "text", "text": "ok"}]}));
        check_result(&result).map_err(ApiError::bad_request)?;
        let mut state = self.lock();
        let tool = Tool {
            definition,
            behaviour: Behaviour::Fixed(result),
        };
        if state.tools.iter().any(|t| t.name() == tool.name()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("a tool named {} exists", tool.name()),
            ));
        }
        let definition = tool.definition.clone();
        state.tools.push(tool);
        self.bump(&mut state);
        Ok(definition)
    }

    /// Changes the fields of `patch` (`null` removes an optional one); returns the new definition.
    pub fn modify(&self, name: &str, patch: &Map<String, Value>) -> Result<Value, ApiError> {
        if let Some(field) = patch
            .keys()
            .find(|k| !EDITABLE_FIELDS.contains(&k.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "{field}: cannot be changed (editable: {})",
                EDITABLE_FIELDS.join(", ")
            )));
        }
        let mut state = self.lock();
        let tool = state
            .tools
            .iter_mut()
            .find(|t| t.name() == name)
            .ok_or_else(|| ApiError::not_found(format!("no tool named {name}")))?;
        let mut definition = tool.definition.clone();
        if let Some(fields) = definition.as_object_mut() {
            for (key, value) in patch {
                if value.is_null() {
                    fields.remove(key);
                } else {
                    fields.insert(key.clone(), value.clone());
                }
            }
        }
        check_definition(&definition).map_err(ApiError::bad_request)?;
        tool.definition = definition.clone();
        self.bump(&mut state);
        Ok(definition)
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) -> Result<(), ApiError> {
        let mut state = self.lock();
        let before = state.tools.len();
        state.tools.retain(|t| t.name() != name);
        if state.tools.len() == before {
            return Err(ApiError::not_found(format!("no tool named {name}")));
        }
        self.bump(&mut state);
        Ok(())
    }
}

fn encode_cursor(generation: u64, start: usize) -> String {
    hex::encode(format!("tools:{generation}:{start}"))
}

fn decode_cursor(cursor: &str) -> Option<(u64, usize)> {
    let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    let mut parts = text.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("tools"), Some(generation), Some(start), None) => {
            Some((generation.parse().ok()?, start.parse().ok()?))
        }
        _ => None,
    }
}

/// A definition the spec accepts: a valid name, an object `inputSchema`, boolean hints.
fn check_definition(definition: &Value) -> Result<(), String> {
    let fields = definition
        .as_object()
        .ok_or("the tool definition must be an object")?;
    if let Some(field) = fields
        .keys()
        .find(|k| !DEFINITION_FIELDS.contains(&k.as_str()))
    {
        return Err(format!("{field}: not a Tool field"));
    }
    let name = fields
        .get("name")
        .and_then(Value::as_str)
        .ok_or("name: required string")?;
    let valid_name = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_name {
        return Err("name: 1-128 characters of A-Z a-z 0-9 _ - .".into());
    }
    for key in ["title", "description"] {
        if fields.get(key).is_some_and(|v| !v.is_string()) {
            return Err(format!("{key}: must be a string"));
        }
    }
    for key in ["inputSchema", "outputSchema"] {
        if let Some(schema) = fields.get(key)
            && schema["type"] != "object"
        {
            return Err(format!(
                "{key}: must be a JSON Schema with \"type\": \"object\""
            ));
        }
    }
    if !fields.contains_key("inputSchema") {
        return Err("inputSchema: required".into());
    }
    if let Some(annotations) = fields.get("annotations") {
        let annotations = annotations
            .as_object()
            .ok_or("annotations: must be an object")?;
        for (key, value) in annotations {
            let valid = match key.as_str() {
                "title" => value.is_string(),
                _ => value.is_boolean(),
            };
            if !valid {
                return Err(format!("annotations.{key}: wrong type"));
            }
        }
    }
    Ok(())
}

/// A `CallToolResult`: a `content` array of typed blocks, optionally `isError`.
fn check_result(result: &Value) -> Result<(), String> {
    let blocks = result["content"]
        .as_array()
        .ok_or("result.content: required array of content blocks")?;
    if blocks.iter().any(|b| !b["type"].is_string()) {
        return Err("result.content: every block needs a type".into());
    }
    if result.get("isError").is_some_and(|v| !v.is_boolean()) {
        return Err("result.isError: must be a boolean".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(page: &[Value]) -> Vec<String> {
        page.iter()
            .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn pages_follow_cursors_and_a_change_invalidates_them() {
        let registry = Registry::new();
        let (first, next) = registry.page(None, 5).expect("first page");
        assert_eq!(first.len(), 5);
        let cursor = next.expect("more pages");
        let mut all = names(&first);
        let mut cursor = Some(cursor);
        while let Some(c) = cursor {
            let (page, next) = registry.page(Some(&c), 5).expect("next page");
            all.extend(names(&page));
            cursor = next;
        }
        assert_eq!(all.len(), Builtin::ALL.len());
        let (_, next) = registry.page(None, 5).expect("first page");
        registry
            .remove("get_me")
            .expect("get_me is there to remove");
        assert!(registry.page(next.as_deref(), 5).is_err(), "stale cursor");
        assert!(registry.page(Some("nonsense"), 5).is_err());
        assert_eq!(
            registry.page(None, 0).map(|(p, n)| (p.len(), n)),
            Ok((Builtin::ALL.len() - 1, None))
        );
    }

    #[test]
    fn control_changes_are_validated_and_announced() {
        let registry = Registry::new();
        let mut changes = registry.subscribe();
        let schema = json!({"type": "object"});
        assert!(
            registry
                .add(json!({"name": "bad name", "inputSchema": schema}), None)
                .is_err()
        );
        assert!(registry.add(json!({"name": "x"}), None).is_err());
        assert!(
            registry
                .add(
                    json!({"name": "x", "inputSchema": schema, "colour": 1}),
                    None
                )
                .is_err()
        );
        assert!(changes.try_recv().is_err(), "refused changes are silent");
        registry
            .add(
                json!({"name": "x", "inputSchema": schema, "annotations": {"readOnlyHint": true}}),
                None,
            )
            .expect("valid tool");
        assert!(changes.try_recv().is_ok());
        let added = registry.get("x").expect("added");
        assert!(!added.writes());
        assert_eq!(
            registry
                .add(json!({"name": "x", "inputSchema": schema}), None)
                .map_err(|e| e.status),
            Err(StatusCode::CONFLICT)
        );
        let patch = json!({"description": "new", "annotations": {"readOnlyHint": false}});
        let changed = registry
            .modify("x", patch.as_object().expect("object"))
            .expect("editable");
        assert_eq!(changed["description"], "new");
        assert!(registry.get("x").is_some_and(|t| t.writes()));
        let rename = json!({"name": "y"});
        assert!(
            registry
                .modify("x", rename.as_object().expect("object"))
                .is_err()
        );
        assert!(changes.try_recv().is_ok());
        registry.remove("x").expect("exists");
        assert!(registry.remove("x").is_err());
    }
}
