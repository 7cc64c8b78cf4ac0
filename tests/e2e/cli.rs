//! The operator CLI against a real audit-log: what compliance runs.

use std::time::Duration;

use agentauth_audit::{Event, Outcome, action};
use agentauth_grpc::ApiKey;
use agentauth_grpc::client::channel;
use agentauth_proto::audit::v1 as pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_testkit::process::run_to_exit;
use agentauth_testkit::wait_serving;

async fn agentauth(args: &[&str], key: &ApiKey, audit_log: &str) -> (i32, String) {
    let output = tokio::process::Command::new(agentauth_testkit::process::binary("agentauth"))
        .args(["--audit-log", audit_log])
        .args(args)
        .env("AGENTAUTH_API_KEY", key.expose())
        .output()
        .await
        .expect("agentauth runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.contains(key.expose()) && !stderr.contains(key.expose()),
        "the key is never printed"
    );
    (output.status.code().unwrap_or(-1), stdout + &stderr)
}

#[tokio::test]
async fn audit_query_export_and_verify() {
    let key = ApiKey::generate();
    let process = super::binaries::start("audit-log", &key);
    wait_serving(process.address(), "", Duration::from_secs(30))
        .await
        .expect("serving");
    let url = process.url();
    let mut client = AuditLogClient::new(channel(&url, Some(&key)).expect("channel"));
    let events = (0..12)
        .map(|n| {
            let outcome = if n % 4 == 0 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            let mut event = Event::new("acme", "test", action::CREDENTIAL_REFRESHED, outcome);
            event.subject.identifier = Some(format!("user_{}", n % 2));
            pb::Event::from(event)
        })
        .collect();
    client
        .append(pb::AppendRequest { events })
        .await
        .expect("append");

    let (code, out) = agentauth(
        &["audit", "query", "--tenant", "acme", "--outcome", "failure"],
        &key,
        &url,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().all(|l| l.contains(r#""outcome":"failure""#)),
        "{out}"
    );

    let (code, out) = agentauth(
        &["audit", "export", "--tenant", "acme", "--format", "csv"],
        &key,
        &url,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 13, "header and twelve rows: {out}");
    assert!(out.starts_with("sequence,event_id,tenant"));

    let (code, out) = agentauth(&["audit", "verify", "--tenant", "acme"], &key, &url).await;
    assert_eq!((code, out.trim()), (0, "ok: 12 events of `acme` verify"));

    // The database's owner rewrites an event behind audit-log's back: verify exits 1 naming it.
    let database = format!("sqlite://{}/audit-log.db", process.dir().display());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect(&database)
        .await
        .expect("the audit database opens");
    sqlx::raw_sql(
        "DROP TRIGGER audit_events_no_update; \
         UPDATE audit_events SET outcome = 'success' WHERE tenant = 'acme' AND sequence = 5",
    )
    .execute(&mut db)
    .await
    .expect("the owner can tamper");
    let (code, out) = agentauth(&["audit", "verify", "--tenant", "acme"], &key, &url).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.trim(),
        "BROKEN at sequence 5: content does not match its hash (altered) (4 events verified before it)"
    );

    let (code, out) = agentauth(&["audit", "verify", "--tenant", "globex"], &key, &url).await;
    assert_ne!(code, 0);
    assert!(out.contains("PermissionDenied"), "{out}");

    let (status, stderr) = run_to_exit("agentauth", &["audit", "verify", "--tenant", "acme"], &[])
        .await
        .expect("runs");
    assert!(!status.success());
    assert!(stderr.contains("API key is needed"), "{stderr}");
}

#[tokio::test]
async fn keys_generate_grants_only_what_it_is_told_and_the_entry_admits_the_key() {
    let run = |args: &[&str]| {
        std::process::Command::new(agentauth_testkit::process::binary("agentauth"))
            .args(["keys", "generate"])
            .args(args)
            .output()
            .expect("agentauth runs")
    };
    let missing = run(&["--name", "dashboard"]);
    assert!(
        !missing.status.success(),
        "a tenant and a role are required"
    );
    let printed = run(&[
        "--name",
        "dashboard",
        "--tenant",
        "acme",
        "--role",
        "reader",
    ]);
    assert!(printed.status.success(), "{printed:?}");
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("tenants = [\"acme\"]"), "{text}");
    assert!(text.contains("roles = [\"reader\"]"), "{text}");
    assert!(
        text.contains("connections = []") && text.contains("tools = []"),
        "{text}"
    );
    assert!(
        !text.contains("\"*\"]"),
        "nothing is granted for every tenant, connection or tool: {text}"
    );

    // The printed key and entry, put in audit-log's configuration, admit the key as a reader.
    let mut lines = text.lines();
    let key = lines
        .by_ref()
        .find_map(|l| l.trim().strip_prefix("aak_").map(|k| format!("aak_{k}")))
        .expect("the key");
    let entry: String = text
        .lines()
        .skip_while(|l| !l.contains("[[server.callers]]"))
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let config = format!("[server]\nreadiness_interval = \"100ms\"\n\n{entry}");
    let process = agentauth_testkit::process::ServiceProcess::start("audit-log", &config, &[])
        .expect("audit-log with the printed entry");
    wait_serving(process.address(), "", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
    let mut client =
        AuditLogClient::new(channel(&process.url(), Some(&ApiKey::new(&key))).expect("channel"));
    client
        .verify_chain(pb::VerifyChainRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("a reader verifies");
    let status = client
        .verify_chain(pb::VerifyChainRequest {
            tenant: "globex".into(),
            ..Default::default()
        })
        .await
        .expect_err("only its tenant");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
}
