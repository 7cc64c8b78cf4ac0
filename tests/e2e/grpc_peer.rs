//! An independent peer: a Python `grpcio` client, its stubs generated from `proto/`.

use std::time::Duration;

use agentauth_grpc::ApiKey;
use agentauth_testkit::{tools_dir, wait_serving, workspace_root};

#[tokio::test]
async fn python_grpcio_client_sees_health_and_is_refused_without_a_key() {
    let key = ApiKey::generate();
    let process = super::binaries::start("audit-log", &key);
    wait_serving(process.address(), "", Duration::from_secs(30))
        .await
        .expect("serving");
    let python = tools_dir().join("venv/bin/python");
    assert!(
        python.is_file(),
        "{} missing: run `make tools`",
        python.display()
    );
    let output = tokio::process::Command::new(python)
        .arg(workspace_root().join("tests/python/grpc_peer.py"))
        .args(["--addr", &process.address().to_string()])
        .arg("--proto-dir")
        .arg(workspace_root().join("proto"))
        .args(["--method", "agentauth.audit.v1.AuditLog/VerifyChain"])
        .args(["--request", r#"{"tenant": "acme"}"#])
        .args(["--key", key.expose()])
        .output()
        .await
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(result["health"], "SERVING");
    assert_eq!(result["without_key"], "UNAUTHENTICATED");
    assert_eq!(result["with_key"], "OK", "an authorised call passes");
}
