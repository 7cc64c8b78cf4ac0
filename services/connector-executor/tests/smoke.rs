//! A first end-to-end call through the whole system.

#[path = "support/system.rs"]
mod system;

use serde_json::json;
use system::{Options, System};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_tool_reads_the_user_through_the_whole_system() {
    let system = System::start(Options::default()).await;
    system
        .connect_pat("alice", asana_sandbox::seed::ALICE_PAT)
        .await;
    let response = system
        .execute(
            "asana-pat",
            "alice",
            "asana_api_get_user",
            json!({"user_gid": "me"}),
        )
        .await
        .expect("executed");
    assert!(!response.is_error, "{}", response.output_json);
    let output: serde_json::Value = serde_json::from_str(&response.output_json).expect("json");
    assert_eq!(output["email"], "alice@acme.test", "{output}");
}
