//! Every tool a REST connection offers: the curated ones and the generated ones.

use crate::{Method, Source, Tool, Validator, close_matches};

/// The generated tools, checked in (see the crate docs for how to regenerate them).
const GENERATED: &str = include_str!("../generated/rest_tools.json");

/// Why the catalogue could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("the generated tools do not parse: {0}")]
    Generated(serde_json::Error),
    #[error("two tools are named `{0}`")]
    Duplicate(String),
    #[error("the input schema of `{name}` does not compile: {reason}")]
    Schema { name: String, reason: String },
}

/// Every tool, sorted by name.
#[derive(Debug, Clone)]
pub struct Catalogue {
    tools: Vec<Tool>,
}

impl Catalogue {
    /// Curated and generated tools, sorted by name. Fails on duplicate names or a curated schema
    /// that does not compile (the generated schemas are compiled by `tests/integration/generated.rs`; all
    /// schemas are compiled lazily, on a tool's first [`Tool::prepare`]).
    pub fn new() -> Result<Catalogue, CatalogueError> {
        let curated = crate::curated::tools();
        for tool in &curated {
            Validator::new(&tool.input_schema).map_err(|reason| CatalogueError::Schema {
                name: tool.name.clone(),
                reason,
            })?;
        }
        let generated: Vec<Tool> =
            serde_json::from_str(GENERATED).map_err(CatalogueError::Generated)?;
        Catalogue::from_tools(curated.into_iter().chain(generated).collect())
    }

    /// The catalogue of `tools`, sorted by name; fails on duplicate names.
    fn from_tools(mut tools: Vec<Tool>) -> Result<Catalogue, CatalogueError> {
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = tools.windows(2).find(|pair| pair[0].name == pair[1].name) {
            return Err(CatalogueError::Duplicate(pair[0].name.clone()));
        }
        Ok(Catalogue { tools })
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools
            .binary_search_by(|tool| tool.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tools[i])
    }

    /// Every tool, sorted by name.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Up to five tool names closest to `name`, best first (see [`close_matches`]).
    pub fn close_names(&self, name: &str) -> Vec<&str> {
        close_matches(name, self.tools.iter().map(|tool| tool.name.as_str()))
    }

    /// The generated tool of the spec operation that a request with `method` (as sent, e.g.
    /// `DELETE`) to `path` (relative to the API base, without a query) is: `DELETE
    /// /tasks/123` is `asana_api_delete_task`. A `{placeholder}` of the operation's path
    /// matches one non-empty segment; no two operations of the spec overlap (a test says so),
    /// so at most one matches.
    pub fn operation(&self, method: &str, path: &str) -> Option<&Tool> {
        let method = match method {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => return None,
        };
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        self.tools.iter().find(|tool| {
            tool.source == Source::Generated
                && tool.route.method == method
                && template_matches(&tool.route.path, &segments)
        })
    }
}

/// Whether the path template (`/tasks/{task_gid}`) matches `segments` one for one.
fn template_matches(template: &str, segments: &[&str]) -> bool {
    let mut parts = template.trim_start_matches('/').split('/');
    let mut matched = 0;
    for part in parts.by_ref() {
        let Some(segment) = segments.get(matched) else {
            return false;
        };
        let placeholder = part.starts_with('{') && part.ends_with('}');
        if !placeholder && part != *segment {
            return false;
        }
        matched += 1;
    }
    matched == segments.len()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn builds_sorted_and_finds_tools() {
        let started = Instant::now();
        let catalogue = Catalogue::new().expect("catalogue builds");
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs() < 2, "Catalogue::new took {elapsed:?}");
        let names: Vec<_> = catalogue.tools().iter().map(|t| t.name.as_str()).collect();
        assert!(names.is_sorted());
        assert!(names.len() >= 247);
        let task = catalogue.get("asana_api_get_task").expect("generated tool");
        assert_eq!(task.route.path, "/tasks/{task_gid}");
        assert!(catalogue.get("asana_api_no_such_tool").is_none());
        assert_eq!(
            catalogue.close_names("asana_api_get_tsk").first(),
            Some(&"asana_api_get_task")
        );
        assert!(catalogue.close_names("asana_api_get_tsk").len() <= 5);
        assert_eq!(
            catalogue.close_names("asana_task_craete").first(),
            Some(&"asana_task_create")
        );
    }

    #[test]
    fn requests_resolve_to_their_spec_operation() {
        let catalogue = Catalogue::new().expect("catalogue builds");
        let name =
            |method: &str, path: &str| catalogue.operation(method, path).map(|t| t.name.as_str());
        assert_eq!(name("DELETE", "/tasks/1201"), Some("asana_api_delete_task"));
        assert_eq!(name("GET", "/tasks/1201"), Some("asana_api_get_task"));
        assert_eq!(name("PUT", "/tasks/1201"), Some("asana_api_update_task"));
        assert_eq!(name("GET", "/users/me"), Some("asana_api_get_user"));
        assert_eq!(
            name("GET", "/workspaces/1/tasks/search"),
            Some("asana_api_search_tasks_for_workspace")
        );
        assert_eq!(
            name("POST", "/tasks/1201/addFollowers"),
            Some("asana_api_add_followers_for_task")
        );
        assert_eq!(name("GET", "/tasks"), Some("asana_api_get_tasks"));
        for (method, path) in [
            ("PATCH", "/tasks/1201"),
            ("GET", "/tasks/1201/nonsense"),
            ("DELETE", "/users/me/1"),
            ("GET", "/tasks//stories"),
            ("GET", "/"),
            ("GET", ""),
        ] {
            assert_eq!(name(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn no_two_spec_operations_match_one_request() {
        let catalogue = Catalogue::new().expect("catalogue builds");
        let generated: Vec<&Tool> = catalogue
            .tools()
            .iter()
            .filter(|t| t.source == Source::Generated)
            .collect();
        for a in &generated {
            // A concrete path made from `a`'s template, with a placeholder value no literal
            // segment of the spec has.
            let concrete: Vec<&str> = a
                .route
                .path
                .trim_start_matches('/')
                .split('/')
                .map(|p| if p.starts_with('{') { "1" } else { p })
                .collect();
            let matches: Vec<&str> = generated
                .iter()
                .filter(|b| b.route.method == a.route.method)
                .filter(|b| template_matches(&b.route.path, &concrete))
                .map(|b| b.name.as_str())
                .collect();
            assert_eq!(matches, [a.name.as_str()], "{}", a.route.path);
        }
    }

    #[test]
    fn duplicates_are_refused() {
        let catalogue = Catalogue::new().expect("catalogue builds");
        let tool = catalogue.tools()[0].clone();
        let error = Catalogue::from_tools(vec![tool.clone(), tool]).expect_err("duplicate");
        assert!(matches!(error, CatalogueError::Duplicate(_)), "{error}");
    }
}
