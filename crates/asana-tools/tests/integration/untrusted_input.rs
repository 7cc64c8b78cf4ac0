//! Tool inputs come from callers and LLMs: whatever they hold, `prepare` answers with one
//! request or with violations, never panics, and a value can never change the request's shape
//! (a path parameter cannot add a segment, a query or a fragment).

use asana_tools::{Catalogue, Place, Tool};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn catalogue() -> &'static Catalogue {
    static CATALOGUE: std::sync::OnceLock<Catalogue> = std::sync::OnceLock::new();
    CATALOGUE.get_or_init(|| Catalogue::new().expect("catalogue"))
}

/// Strings that try to break out of a path segment, and others.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1201".to_owned()),
        Just("../../users/me".to_owned()),
        Just("1/../2".to_owned()),
        Just("a?b=c#d".to_owned()),
        Just("%2F%2e%2e".to_owned()),
        Just("\u{0}\u{7f}\u{202e}".to_owned()),
        any::<String>(),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An input for `tool`: each of its properties present or not, with any value, plus noise.
fn input_for(tool: &'static Tool) -> impl Strategy<Value = Value> {
    let names: Vec<String> = tool.input_schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    (
        proptest::collection::vec(proptest::option::of(json()), names.len()),
        proptest::collection::btree_map(text(), json(), 0..2),
    )
        .prop_map(move |(values, extra)| {
            let mut input = Map::new();
            for (name, value) in names.iter().zip(values) {
                if let Some(value) = value {
                    input.insert(name.clone(), value);
                }
            }
            input.extend(extra);
            Value::Object(input)
        })
}

fn any_tool() -> impl Strategy<Value = &'static Tool> {
    let tools = catalogue().tools();
    (0..tools.len()).prop_map(move |i| &tools[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_input_to_any_tool_is_one_well_formed_request_or_violations(
        (tool, input) in any_tool().prop_flat_map(|tool| (Just(tool), input_for(tool))),
    ) {
        match tool.prepare(&input) {
            Ok(call) => {
                let template_segments = tool.route.path.split('/').count();
                prop_assert_eq!(
                    call.path.split('/').count(),
                    template_segments,
                    "{} built {} from {}", tool.name, call.path, input
                );
                for bad in ["?", "#", "..", "//"] {
                    prop_assert!(!call.path.contains(bad), "{bad} in {}", call.path);
                }
                let path_params = tool
                    .route
                    .bindings
                    .iter()
                    .filter(|b| matches!(b.to, Place::Path(_)))
                    .count();
                let unfilled = call.path.contains('{');
                prop_assert!(path_params == 0 || !unfilled, "a placeholder left in {}", call.path);
            }
            Err(violations) => prop_assert!(!violations.is_empty()),
        }
    }

    #[test]
    fn a_non_object_input_is_one_violation(value in json(), tool in any_tool()) {
        prop_assume!(!value.is_object());
        let violations = tool.prepare(&value).expect_err("not an object");
        prop_assert_eq!(violations.len(), 1);
    }
}
