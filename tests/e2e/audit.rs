//! audit-log as deployed: the real binary on PostgreSQL.

use std::time::Duration;

use agentauth_audit::{Event, Outcome, action};
use agentauth_grpc::ApiKey;
use agentauth_grpc::client::channel;
use agentauth_proto::audit::v1 as pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_testkit::database::PostgresDatabase;
use agentauth_testkit::process::ServiceProcess;
use agentauth_testkit::wait_serving;

/// The resident memory of process `pid`, in KiB. Panics when it cannot be read: a check of
/// memory that reads nothing would pass whatever the process did.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status cannot be read: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .filter(|kib| *kib > 0)
        .unwrap_or_else(|| panic!("/proc/{pid}/status has no VmRSS: {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_100k_events_streams_in_constant_memory_on_postgres() {
    let db = PostgresDatabase::create().await.expect("database");
    export_in_constant_memory(db.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_100k_events_streams_in_constant_memory_on_sqlite() {
    let db = agentauth_testkit::database::SqliteDatabase::create().expect("database");
    export_in_constant_memory(db.url()).await;
}

/// Appends 100,000 events, exports them, and watches the service's resident memory.
async fn export_in_constant_memory(url: &str) {
    let key = ApiKey::generate();
    let config = super::binaries::config("audit-log", &key).replacen(
        "[server]",
        &format!("[database]\nurl = \"{url}\"\n\n[server]"),
        1,
    );
    let process = ServiceProcess::start("audit-log", &config, &[]).expect("start");
    wait_serving(process.address(), "", Duration::from_secs(30))
        .await
        .expect("serving");
    let mut client = AuditLogClient::new(channel(&process.url(), Some(&key)).expect("channel"));
    for batch in 0..100 {
        let events = (0..1000)
            .map(|i| {
                let mut event = Event::new("acme", "test", action::TOOL_EXECUTED, Outcome::Success);
                event.details.insert("n".into(), (batch * 1000 + i).into());
                event
                    .details
                    .insert("padding".into(), "x".repeat(200).into());
                pb::Event::from(event)
            })
            .collect();
        client
            .append(pb::AppendRequest { events })
            .await
            .expect("append");
    }

    let pid = process.pid();
    let before = resident_kib(pid);
    let mut stream = client
        .export(pb::ExportRequest {
            filter: Some(pb::EventFilter {
                tenant: "acme".into(),
                ..Default::default()
            }),
            format: pb::ExportFormat::Ndjson.into(),
        })
        .await
        .expect("export")
        .into_inner();
    let (mut lines, mut bytes, mut peak) = (0usize, 0usize, before);
    while let Some(chunk) = stream.message().await.expect("chunk") {
        lines += chunk.data.iter().filter(|b| **b == b'\n').count();
        bytes += chunk.data.len();
        peak = peak.max(resident_kib(pid));
    }
    assert_eq!(lines, 100_000);
    let grown_kib = peak.saturating_sub(before);
    // The export is ~40 MB of NDJSON; holding it (or the rows behind it) would show here.
    assert!(
        grown_kib < 16 * 1024 && (grown_kib as usize) * 1024 < bytes / 3,
        "audit-log grew by {grown_kib} KiB while exporting {bytes} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitter_spools_while_audit_log_is_down_and_delivers_in_order_when_it_returns() {
    let db = PostgresDatabase::create().await.expect("database");
    let key = ApiKey::generate();
    let config = super::binaries::config("audit-log", &key).replacen(
        "[server]",
        &format!("[database]\nurl = \"{}\"\n\n[server]", db.url()),
        1,
    );
    let address = agentauth_testkit::free_port();
    let audit_log = ServiceProcess::start_on("audit-log", &config, &[], address).expect("start");
    wait_serving(address, "", Duration::from_secs(30))
        .await
        .expect("serving");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key"), key.expose()).expect("key file");
    let emitter = agentauth_audit::Emitter::start(agentauth_audit::EmitterConfig {
        url: format!("http://{address}"),
        api_key_file: Some(dir.path().join("key")),
        spool_dir: dir.path().join("spool"),
        request_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .expect("emitter");
    let numbered = |n: usize| {
        let mut event = Event::new(
            "acme",
            "test",
            action::CREDENTIAL_REFRESHED,
            Outcome::Success,
        );
        event.details.insert("n".into(), n.into());
        event
    };
    for n in 0..100 {
        emitter.emit(numbered(n)).expect("emit");
    }
    emitter.flush().await.expect("flush");
    assert_eq!(emitter.stats().delivered, 100);

    let status = audit_log
        .terminate(Duration::from_secs(10))
        .await
        .expect("stops");
    assert!(status.success());
    for n in 100..400 {
        emitter
            .emit(numbered(n))
            .expect("emit while audit-log is down");
    }
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(20),
        async { emitter.stats().spooled >= 300 },
        "events are spooled to disk while audit-log is down: {:?}",
        emitter.stats()
    );
    assert!(
        std::fs::read_dir(dir.path().join("spool"))
            .expect("spool dir")
            .count()
            > 1,
        "spool files exist"
    );

    let restarted = ServiceProcess::start_on("audit-log", &config, &[], address).expect("restart");
    wait_serving(address, "", Duration::from_secs(30))
        .await
        .expect("serving again");
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(30),
        async { emitter.stats().delivered >= 400 },
        "the spool is replayed once audit-log returns: {:?}",
        emitter.stats()
    );

    let mut client = AuditLogClient::new(channel(&restarted.url(), Some(&key)).expect("channel"));
    let page = client
        .query(pb::QueryRequest {
            filter: Some(pb::EventFilter {
                tenant: "acme".into(),
                ..Default::default()
            }),
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("query")
        .into_inner();
    let order: Vec<u64> = page
        .events
        .iter()
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.details_json).expect("json")["n"]
                .as_u64()
                .expect("n")
        })
        .collect();
    assert_eq!(
        order,
        (0..400).collect::<Vec<u64>>(),
        "every event exactly once, in emit order"
    );
    let verification = client
        .verify_chain(pb::VerifyChainRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .expect("verify")
        .into_inner();
    assert!(verification.ok, "{}", verification.reason);
    emitter.shutdown(Duration::from_secs(5)).await;
}
