//! The curated tools: every one prepared from a realistic input and sent to the in-process
//! sandbox, directly and through Stoplight Prism (which checks each request and response
//! against Asana's OpenAPI spec); and each schema refusing bad inputs with the field named.

use crate::cases;

use std::collections::BTreeSet;

use agentauth_testkit::prism;
use anyhow::{Context, Result, bail, ensure};
use asana_sandbox::Sandbox;
use asana_sandbox::seed::ALICE_PAT;
use asana_tools::{Catalogue, Method, Place, Source, Tool, Validator};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::cases::{Failure, Outcome};

/// The sandbox on a loopback port, and a receiver that completes webhook handshakes.
struct Running {
    api: String,
    hook_target: String,
    _stop: DropGuard,
}

async fn start() -> Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let root = format!("http://{}", listener.local_addr()?);
    let sandbox = Sandbox::new(asana_sandbox::Config {
        public_url: root.clone(),
        ..Default::default()
    });
    let stop = CancellationToken::new();
    tokio::spawn(sandbox.serve(listener, stop.clone()));
    let hook_target = cases::hook_receiver(stop.clone()).await?;
    Ok(Running {
        api: format!("{root}/api/1.0"),
        hook_target,
        _stop: stop.drop_guard(),
    })
}

/// Sends the cases' calls to one API base as Alice: each curated tool's prepared request,
/// and the raw requests the cases need besides.
struct Direct {
    catalogue: Catalogue,
    http: reqwest::Client,
    base_url: String,
}

impl Direct {
    fn new(base_url: &str) -> Result<Self> {
        Ok(Self {
            catalogue: Catalogue::new()?,
            http: reqwest::Client::new(),
            base_url: base_url.to_owned(),
        })
    }

    /// Sends `request` as Alice; fails on no answer or a Prism violation.
    async fn exchange(&self, what: &str, request: reqwest::RequestBuilder) -> Result<Outcome> {
        let answer = request
            .bearer_auth(ALICE_PAT)
            .send()
            .await
            .with_context(|| format!("{what}: no answer"))?;
        let status = answer.status();
        let sl_violations = answer
            .headers()
            .get("sl-violations")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = answer.text().await?;
        if let Some(found) = prism::violation(sl_violations.as_deref(), &text) {
            bail!("{what}: Prism found {status} not to match the spec:\n{found}");
        }
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(if status.is_success() {
            Ok(body["data"].clone())
        } else {
            Err(Failure {
                status: status.as_u16(),
                errors: body["errors"].clone(),
            })
        })
    }
}

impl cases::Runner for Direct {
    async fn tool(&mut self, name: &str, input: &Value) -> Result<Outcome> {
        let tool = self
            .catalogue
            .get(name)
            .with_context(|| format!("no tool {name}"))?;
        ensure!(tool.source == Source::Curated, "{name} is not curated");
        let call = tool
            .prepare(input)
            .map_err(|violations| anyhow::anyhow!("{name} refused {input}: {violations:?}"))?;
        let method = match call.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let url = Url::parse_with_params(&format!("{}{}", self.base_url, call.path), &call.query)?;
        let mut request = self.http.request(method, url);
        if let Some(data) = &call.data {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&json!({ "data": data }))?);
        }
        let what = format!("{name}: {:?} {:?}", call.method, call.path);
        self.exchange(&what, request).await
    }

    async fn raw(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Outcome> {
        let request = self
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                format!("{}{path}", self.base_url),
            )
            .header("content-type", content_type)
            .body(body);
        self.exchange(&format!("{method} {path}"), request).await
    }
}

/// The names of the curated tools.
fn curated_names() -> Result<BTreeSet<String>> {
    Ok(Catalogue::new()?
        .tools()
        .iter()
        .filter(|tool| tool.source == Source::Curated)
        .map(|tool| tool.name.clone())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curated_tool_works_against_the_sandbox() -> Result<()> {
    let running = start().await?;
    let covered = cases::run_cases(&mut Direct::new(&running.api)?, &running.hook_target).await?;
    assert_eq!(covered, curated_names()?, "every curated tool needs a case");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_curated_request_passes_prism() -> Result<()> {
    let running = start().await?;
    let proxy = prism::start_proxy(&running.api).await?;
    let covered = cases::run_cases(&mut Direct::new(proxy.url())?, &running.hook_target)
        .await
        .with_context(|| format!("prism log:\n{}", proxy.log()))?;
    assert_eq!(covered, curated_names()?, "every curated tool needs a case");
    Ok(())
}

fn curated() -> Result<Vec<Tool>> {
    Ok(Catalogue::new()?
        .tools()
        .iter()
        .filter(|tool| tool.source == Source::Curated)
        .cloned()
        .collect())
}

#[test]
fn the_promised_tools_are_there() -> Result<()> {
    let names = curated_names()?;
    for name in [
        "asana_task_create",
        "asana_task_update",
        "asana_task_search",
        "asana_projects_search",
        "asana_story_create",
        "asana_status_update_create",
        "asana_webhook_create",
    ] {
        ensure!(names.contains(name), "no curated tool {name}");
    }
    Ok(())
}

#[test]
fn every_curated_tool_is_described_for_an_llm() -> Result<()> {
    for tool in curated()? {
        let name = &tool.name;
        let schema = &tool.input_schema;
        Validator::new(schema).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        ensure!(
            name.starts_with("asana_") && !tool.title.is_empty(),
            "{name}"
        );
        ensure!(
            schema["type"] == "object" && schema["additionalProperties"] == false,
            "{name}: not a closed object"
        );
        let properties = schema["properties"]
            .as_object()
            .with_context(|| format!("{name}: no properties"))?;
        let has_example = tool.description.contains("e.g.")
            || properties.values().any(|p| {
                p["description"]
                    .as_str()
                    .is_some_and(|d| d.contains("e.g."))
            });
        ensure!(has_example, "{name}: no example");
        for (property, schema) in properties {
            ensure!(
                schema["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{name}.{property}: no description"
            );
            let bound = tool
                .route
                .bindings
                .iter()
                .filter(|b| &b.input == property)
                .count();
            ensure!(bound == 1, "{name}.{property}: bound {bound} times");
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap_or_default();
            ensure!(
                properties.contains_key(required),
                "{name}: requires unknown {required}"
            );
        }
        for binding in &tool.route.bindings {
            ensure!(
                properties.contains_key(&binding.input),
                "{name}: binds unknown {}",
                binding.input
            );
            if let Place::Path(placeholder) = &binding.to {
                ensure!(
                    tool.route.path.contains(&format!("{{{placeholder}}}")),
                    "{name}: no {{{placeholder}}} in {}",
                    tool.route.path
                );
            }
        }
        let placeholders = tool.route.path.matches('{').count();
        let path_bindings = tool
            .route
            .bindings
            .iter()
            .filter(|b| matches!(b.to, Place::Path(_)))
            .count();
        ensure!(placeholders == path_bindings, "{name}: unbound placeholder");

        let hints = tool.hints;
        match tool.route.method {
            Method::Get => {
                ensure!(hints.read_only && !hints.destructive, "{name}: hints");
                ensure!(
                    properties.contains_key("opt_fields"),
                    "{name}: a read without opt_fields"
                );
            }
            Method::Put => ensure!(hints.idempotent && !hints.read_only, "{name}: hints"),
            Method::Delete => ensure!(hints.destructive && !hints.read_only, "{name}: hints"),
            Method::Post => ensure!(!hints.read_only && !hints.destructive, "{name}: hints"),
        }
        let pages = properties.contains_key("limit") && properties.contains_key("offset");
        ensure!(pages == tool.route.paginated, "{name}: paging");
        if pages {
            ensure!(
                properties["limit"]["minimum"] == 1 && properties["limit"]["maximum"] == 100,
                "{name}: limit bounds"
            );
        }
    }
    Ok(())
}

#[test]
fn bad_inputs_are_refused_naming_the_field() -> Result<()> {
    let names = |found: &[asana_tools::Violation]| {
        found
            .iter()
            .map(|v| v.field.clone())
            .collect::<BTreeSet<_>>()
    };
    for tool in curated()? {
        let name = &tool.name;
        let schema = &tool.input_schema;

        let found = tool
            .prepare(&json!({"not_a_field": 1}))
            .err()
            .with_context(|| format!("{name} accepted an unknown field"))?;
        ensure!(names(&found).contains("not_a_field"), "{name}: {found:?}");

        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !required.is_empty() {
            let found = tool
                .prepare(&json!({}))
                .err()
                .with_context(|| format!("{name} accepted a missing {required:?}"))?;
            for field in &required {
                ensure!(names(&found).contains(*field), "{name}: {found:?}");
            }
        }

        for (property, schema) in schema["properties"].as_object().into_iter().flatten() {
            let bad = if schema["pattern"] == "^[0-9]+$" {
                json!({ property: "12ab" })
            } else if schema["items"]["pattern"] == "^[0-9]+$" {
                json!({ property: ["12ab"] })
            } else {
                continue;
            };
            let found = tool
                .prepare(&bad)
                .err()
                .with_context(|| format!("{name} accepted {bad}"))?;
            ensure!(
                names(&found)
                    .iter()
                    .any(|field| field == property || field.starts_with(&format!("{property}."))),
                "{name}: {bad} gave {found:?}"
            );
        }
    }
    Ok(())
}

/// `value`, with a `$ref` into the spec followed.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => resolve(spec, spec.pointer(pointer).unwrap_or(&Value::Null)),
        None => value,
    }
}

/// The spec's path item for `path`; a literal segment (`me` of `/users/me`) matches a
/// `{placeholder}`.
fn spec_path<'a>(spec: &'a Value, path: &str) -> Option<&'a Value> {
    let segments: Vec<&str> = path.split('/').collect();
    spec["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            let fits = parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(part, segment)| part == segment || part.starts_with('{'));
            fits.then_some(item)
        })
}

/// The properties of a schema and of its `allOf` branches: name → whether required.
fn schema_fields(spec: &Value, schema: &Value, fields: &mut Vec<(String, bool)>) {
    let schema = resolve(spec, schema);
    for branch in schema["allOf"].as_array().into_iter().flatten() {
        schema_fields(spec, branch, fields);
    }
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for name in schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(n, _)| n)
    {
        fields.push((name.clone(), required.contains(&name.as_str())));
    }
    for name in required {
        fields.push((name.to_owned(), true));
    }
}

#[test]
fn every_curated_route_parameter_and_field_is_in_the_spec() -> Result<()> {
    let spec: Value = serde_yaml::from_str(&std::fs::read_to_string(prism::asana_spec_path())?)?;
    for tool in curated()? {
        let name = &tool.name;
        let method = format!("{:?}", tool.route.method).to_lowercase();
        let item = spec_path(&spec, &tool.route.path)
            .with_context(|| format!("{name}: the spec has no path {}", tool.route.path))?;
        let operation = &item[&method];
        ensure!(
            operation.is_object(),
            "{name}: the spec has no {method} {}",
            tool.route.path
        );
        let parameters: Vec<(String, String, bool)> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(operation["parameters"].as_array().into_iter().flatten())
            .map(|p| resolve(&spec, p))
            .map(|p| {
                (
                    p["in"].as_str().unwrap_or_default().to_owned(),
                    p["name"].as_str().unwrap_or_default().to_owned(),
                    p["required"] == true,
                )
            })
            .collect();
        let body = resolve(&spec, &operation["requestBody"]);
        let mut fields = Vec::new();
        schema_fields(
            &spec,
            &resolve(&spec, &body["content"]["application/json"]["schema"])["properties"]["data"],
            &mut fields,
        );
        let required: Vec<&str> = tool.input_schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let has =
            |place: &str, param: &str| parameters.iter().any(|(p, n, _)| p == place && n == param);
        for binding in &tool.route.bindings {
            let known = match &binding.to {
                Place::Path(param) => has("path", param),
                Place::Query(param) => has("query", param),
                Place::OptFields => has("query", "opt_fields"),
                Place::Data(field) | Place::DataEntry { field, .. } => {
                    fields.iter().any(|(f, _)| f == field)
                }
                Place::DataObject | Place::KeyOnly => true,
            };
            ensure!(
                known,
                "{name}: {} ({:?}) is not in the spec's {method} {}",
                binding.input,
                binding.to,
                tool.route.path
            );
        }
        let offered: Vec<&Value> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(operation["parameters"].as_array().into_iter().flatten())
            .map(|p| resolve(&spec, p))
            .filter(|p| p["name"] == "opt_fields")
            .flat_map(|p| {
                p["schema"]["items"]["enum"]
                    .as_array()
                    .into_iter()
                    .flatten()
            })
            .collect();
        let examples = &tool.input_schema["properties"]["opt_fields"]["examples"];
        for field in examples
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_array)
            .flatten()
        {
            ensure!(
                offered.contains(&field),
                "{name}: the spec offers no opt_field {field}"
            );
        }
        for (place, param, needed) in &parameters {
            if *needed && place == "query" {
                let bound = tool
                    .route
                    .bindings
                    .iter()
                    .find(|b| matches!(&b.to, Place::Query(p) if p == param));
                ensure!(
                    bound.is_some_and(|b| required.contains(&b.input.as_str())),
                    "{name}: the spec requires the query parameter {param}"
                );
            }
        }
        for (field, needed) in &fields {
            if *needed {
                let bound = tool.route.bindings.iter().find(
                    |b| matches!(&b.to, Place::Data(f) | Place::DataEntry { field: f, .. } if f == field),
                );
                ensure!(
                    bound.is_some_and(|b| required.contains(&b.input.as_str())),
                    "{name}: the spec requires data.{field}"
                );
            }
        }
    }
    Ok(())
}
