//! The checked-in generated tools match Asana's spec, and a few of them look as expected.

use std::path::Path;

use asana_tools::{Method, Place, RateClass, Tool, Validator};
use serde_json::json;

const REGENERATE: &str = "cargo run -p asana-tools --bin asana-tools-generate";

fn spec() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../asana-sandbox/spec/asana_oas.yaml");
    std::fs::read_to_string(&path).expect("the spec is readable")
}

fn checked_in() -> Vec<Tool> {
    let text = include_str!("../../generated/rest_tools.json");
    serde_json::from_str(text).expect("the generated tools parse")
}

fn tool<'a>(tools: &'a [Tool], name: &str) -> &'a Tool {
    tools
        .iter()
        .find(|tool| tool.name == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
}

fn binding<'a>(tool: &'a Tool, input: &str) -> &'a Place {
    &tool
        .route
        .bindings
        .iter()
        .find(|binding| binding.input == input)
        .unwrap_or_else(|| panic!("{} has no binding for {input}", tool.name))
        .to
}

#[test]
fn checked_in_file_is_up_to_date() {
    let tools = asana_tools::generate(&spec()).expect("the spec generates");
    let mut fresh = serde_json::to_string_pretty(&tools).expect("tools serialize");
    fresh.push('\n');
    let stored = include_str!("../../generated/rest_tools.json");
    assert!(
        fresh == stored,
        "crates/asana-tools/generated/rest_tools.json is stale; regenerate it with `{REGENERATE}`"
    );
}

#[test]
fn one_tool_per_operation() {
    let spec: serde_yaml::Value = serde_yaml::from_str(&spec()).expect("the spec parses");
    let methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let operations: usize = spec["paths"]
        .as_mapping()
        .expect("paths")
        .values()
        .map(|item| {
            methods
                .iter()
                .filter(|method| item[**method]["operationId"].as_str().is_some())
                .count()
        })
        .sum();
    assert_eq!(operations, 247);
    assert_eq!(checked_in().len(), operations);
}

#[test]
fn every_schema_compiles_and_is_closed() {
    for tool in checked_in() {
        Validator::new(&tool.input_schema)
            .unwrap_or_else(|e| panic!("{}: schema does not compile: {e}", tool.name));
        assert_eq!(
            tool.input_schema["additionalProperties"],
            json!(false),
            "{}",
            tool.name
        );
        assert!(tool.name.starts_with("asana_api_"), "{}", tool.name);
        assert!(
            tool.description.ends_with(&format!("{}.", tool.route.path)),
            "{}",
            tool.name
        );
    }
}

#[test]
fn get_task() {
    let tools = checked_in();
    let get = tool(&tools, "asana_api_get_task");
    assert_eq!(get.route.method, Method::Get);
    assert_eq!(get.route.path, "/tasks/{task_gid}");
    assert_eq!(get.route.class, RateClass::Read);
    assert!(!get.route.paginated);
    assert!(get.hints.read_only && get.hints.idempotent && !get.hints.destructive);
    assert_eq!(get.input_schema["properties"]["task_gid"]["type"], "string");
    assert_eq!(get.input_schema["required"], json!(["task_gid"]));
    assert!(get.input_schema["properties"].get("opt_pretty").is_none());
    assert_eq!(
        binding(get, "task_gid"),
        &Place::Path("task_gid".to_owned())
    );
    assert_eq!(binding(get, "opt_fields"), &Place::OptFields);

    let call = get
        .prepare(&json!({"task_gid": "123", "opt_fields": ["name", "due_on"]}))
        .expect("binds");
    assert_eq!(call.path, "/tasks/123");
    assert_eq!(
        call.query,
        [("opt_fields".to_owned(), "name,due_on".to_owned())]
    );
    let violations = get
        .prepare(&json!({"opt_fields": ["name"]}))
        .expect_err("no gid");
    assert_eq!(violations[0].field, "task_gid");
    let violations = get
        .prepare(&json!({"task_gid": "12ab"}))
        .expect_err("a gid is digits");
    assert_eq!(violations[0].field, "task_gid");
    let me = tool(&tools, "asana_api_get_user");
    assert!(
        me.prepare(&json!({"user_gid": "me"})).is_ok(),
        "user_gid also takes `me` or an email"
    );
}

#[test]
fn create_task() {
    let tools = checked_in();
    let create = tool(&tools, "asana_api_create_task");
    assert_eq!(create.route.method, Method::Post);
    assert_eq!(create.route.path, "/tasks");
    assert_eq!(create.route.class, RateClass::Write);
    assert_eq!(binding(create, "data"), &Place::DataObject);
    assert_eq!(create.hints, Default::default());
    let data = &create.input_schema["properties"]["data"];
    assert_eq!(data["type"], "object");
    assert!(data["properties"].get("name").is_some());
    assert!(
        data["properties"].get("gid").is_none(),
        "read-only properties are dropped"
    );

    let call = create
        .prepare(&json!({"data": {"name": "Write the report", "workspace": "1", "x_unknown": 1}}))
        .expect("binds");
    assert_eq!(
        call.data,
        Some(json!({"name": "Write the report", "workspace": "1", "x_unknown": 1}))
    );
    assert!(!call.idempotent);
    let violations = create
        .prepare(&json!({"data": {"name": 5}}))
        .expect_err("wrong type");
    assert_eq!(violations[0].field, "data.name");
}

#[test]
fn search_and_pagination() {
    let tools = checked_in();
    let search = tool(&tools, "asana_api_search_tasks_for_workspace");
    assert_eq!(search.route.class, RateClass::Search);
    let list = tool(&tools, "asana_api_get_tasks");
    assert!(list.route.paginated);
    assert_eq!(list.route.class, RateClass::Read);
    assert_eq!(binding(list, "limit"), &Place::Query("limit".to_owned()));
    let delete = tool(&tools, "asana_api_delete_task");
    assert!(delete.hints.destructive && delete.hints.idempotent);
    let custom = tool(&tools, "asana_api_get_task_for_custom_id");
    assert!(custom.route.path.contains("{custom_id}"));
}

#[test]
fn multipart_upload_is_url_only() {
    let tools = checked_in();
    let upload = tool(&tools, "asana_api_create_attachment_for_object");
    assert!(
        upload
            .description
            .contains("File uploads are not supported")
    );
    let data = &upload.input_schema["properties"]["data"];
    assert!(data["properties"].get("file").is_none());
    assert!(data["properties"].get("url").is_some());
}
