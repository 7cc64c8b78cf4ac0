//! Every tool a REST connection offers: the curated ones and the generated ones.

use crate::{Tool, Validator, close_matches};

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
    /// that does not compile (the generated schemas are compiled by `tests/generated.rs`; all
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
    fn duplicates_are_refused() {
        let catalogue = Catalogue::new().expect("catalogue builds");
        let tool = catalogue.tools()[0].clone();
        let error = Catalogue::from_tools(vec![tool.clone(), tool]).expect_err("duplicate");
        assert!(matches!(error, CatalogueError::Duplicate(_)), "{error}");
    }
}
