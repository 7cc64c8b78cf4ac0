//! One suite, run on PostgreSQL and on SQLite: audit-log served in-process against a real
//! database of its own.

use std::time::Duration;

use agentauth_audit::{CredentialRef, Event, Outcome, action};
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_grpc::{ApiKey, CallerConfig, ServerConfig};
use agentauth_launch::Service as _;
use agentauth_proto::audit::v1 as pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_testkit::database::{PostgresDatabase, SqliteDatabase};
use audit_log::{AuditLogService, Config, DatabaseConfig};
use sqlx::{AssertSqlSafe, Connection as _, Executor as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_types::StatusExt;

/// A database of one backend, alive as long as the test.
enum Db {
    Postgres(PostgresDatabase),
    Sqlite(SqliteDatabase),
}

impl Db {
    async fn create(backend: &str) -> Self {
        match backend {
            "postgres" => {
                Self::Postgres(PostgresDatabase::create().await.expect("postgres database"))
            }
            _ => Self::Sqlite(SqliteDatabase::create().expect("sqlite file")),
        }
    }

    fn url(&self) -> &str {
        match self {
            Self::Postgres(db) => db.url(),
            Self::Sqlite(db) => db.url(),
        }
    }

    /// Runs `sql` directly, as someone with database access would, bypassing the service.
    async fn raw(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self {
            Self::Postgres(db) => {
                let mut c = sqlx::PgConnection::connect(db.url()).await?;
                Ok(c.execute(AssertSqlSafe(sql.to_owned()))
                    .await?
                    .rows_affected())
            }
            Self::Sqlite(db) => {
                let mut c = sqlx::SqliteConnection::connect(db.url()).await?;
                Ok(c.execute(AssertSqlSafe(sql.to_owned()))
                    .await?
                    .rows_affected())
            }
        }
    }

    /// Removes the append-only guard, as a database owner could, to tamper with rows.
    async fn tamper(&self, sql: &str) {
        let script = match self {
            Self::Postgres(_) => format!(
                "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only; {sql}; \
                 ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only"
            ),
            Self::Sqlite(_) => format!(
                "DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete; {sql}"
            ),
        };
        self.raw(&script)
            .await
            .expect("tampering succeeds for the database owner");
    }
}

/// One audit-log instance serving in-process.
struct Instance {
    url: String,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    async fn start(db_url: &str, keys: &Keys) -> Self {
        let callers = vec![
            // A writer appends only in its own name: the events below name connector-executor.
            caller(
                "connector-executor",
                &keys.acme,
                &["acme"],
                &["writer", "reader"],
            ),
            caller("compliance", &keys.compliance, &["acme"], &["reader"]),
            caller("operator", &keys.operator, &["*"], &["operator"]),
        ];
        let config = Config {
            server: ServerConfig {
                callers,
                ..ServerConfig::default()
            },
            database: DatabaseConfig::new(db_url),
            ..Default::default()
        };
        let service = AuditLogService::new(config).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(service.run(listener, shutdown.clone()));
        agentauth_testkit::wait_serving(address, "", Duration::from_secs(20))
            .await
            .expect("serving");
        Self {
            url: format!("http://{address}"),
            shutdown,
            served,
        }
    }

    fn client(&self, key: &ApiKey) -> AuditLogClient<AuthenticatedChannel> {
        AuditLogClient::new(channel(&self.url, Some(key)).expect("channel"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.served.await.expect("task").expect("clean stop");
    }
}

struct Keys {
    acme: ApiKey,
    compliance: ApiKey,
    operator: ApiKey,
}

fn caller(name: &str, key: &ApiKey, tenants: &[&str], roles: &[&str]) -> CallerConfig {
    CallerConfig {
        name: name.into(),
        key_sha256: key.hash(),
        previous_key_sha256: None,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        connections: vec!["*".into()],
        tools: vec!["*".into()],
        roles: roles.iter().map(|r| r.to_string()).collect(),
        rpcs: Vec::new(),
    }
}

struct Fixture {
    db: Db,
    keys: Keys,
    instance: Instance,
}

async fn fixture(backend: &str) -> Fixture {
    let db = Db::create(backend).await;
    let keys = Keys {
        acme: ApiKey::generate(),
        compliance: ApiKey::generate(),
        operator: ApiKey::generate(),
    };
    let instance = Instance::start(db.url(), &keys).await;
    Fixture { db, keys, instance }
}

fn event(tenant: &str, n: usize) -> Event {
    let mut event = Event::new(
        tenant,
        "connector-executor",
        action::TOOL_EXECUTED,
        Outcome::Success,
    );
    event.subject.identifier = Some(format!("user_{}", n % 3));
    event.subject.connection_name = Some("asana".into());
    event.credential = Some(CredentialRef {
        account_id: format!("acct-{}", n % 3),
        version: (n % 2) as u64 + 1,
    });
    event.details.insert("n".into(), n.into());
    event
}

fn wire(events: &[Event]) -> pb::AppendRequest {
    pb::AppendRequest {
        events: events.iter().cloned().map(pb::Event::from).collect(),
    }
}

fn filter(tenant: &str) -> pb::EventFilter {
    pb::EventFilter {
        tenant: tenant.into(),
        ..Default::default()
    }
}

async fn query_all(
    client: &mut AuditLogClient<AuthenticatedChannel>,
    filter: pb::EventFilter,
) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .query(pb::QueryRequest {
                filter: Some(filter.clone()),
                page_size: 1000,
                page_token,
            })
            .await
            .expect("query")
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            return events;
        }
        page_token = page.next_page_token;
    }
}

async fn verify(
    client: &mut AuditLogClient<AuthenticatedChannel>,
    tenant: &str,
) -> pb::VerifyChainResponse {
    client
        .verify_chain(pb::VerifyChainRequest {
            tenant: tenant.into(),
            ..Default::default()
        })
        .await
        .expect("verify")
        .into_inner()
}

async fn append_and_query_round_trip(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    // A millisecond apart, so a time window selects by position.
    let start = chrono::Utc::now() - chrono::Duration::seconds(10);
    let events: Vec<Event> = (0..5)
        .map(|n| Event {
            occurred_at: start + chrono::Duration::milliseconds(n as i64),
            ..event("acme", n)
        })
        .collect();
    let results = client
        .append(wire(&events))
        .await
        .expect("append")
        .into_inner()
        .results;
    assert_eq!(
        results.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(results.iter().all(|r| !r.duplicate));

    let stored = query_all(&mut client, filter("acme")).await;
    assert_eq!(stored.len(), 5);
    for (sent, got) in events.iter().zip(&stored) {
        let back = Event::try_from(got.clone()).expect("stored event is valid");
        assert_eq!(back.id, sent.id);
        assert_eq!(back.details, sent.details);
        assert_eq!(back.credential, sent.credential);
        assert_eq!(got.hash.len(), 32);
    }
    assert_eq!(
        stored[1].prev_hash, stored[0].hash,
        "each event links to the one before"
    );

    let by_identifier = query_all(
        &mut client,
        pb::EventFilter {
            identifier: Some("user_1".into()),
            ..filter("acme")
        },
    )
    .await;
    assert_eq!(
        by_identifier.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [2, 5]
    );
    let by_credential = query_all(
        &mut client,
        pb::EventFilter {
            account_id: Some("acct-0".into()),
            credential_version: Some(1),
            ..filter("acme")
        },
    )
    .await;
    assert_eq!(
        by_credential.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1]
    );
    let failures = query_all(
        &mut client,
        pb::EventFilter {
            outcome: Some(pb::Outcome::Failure.into()),
            ..filter("acme")
        },
    )
    .await;
    assert!(failures.is_empty());
    let window = query_all(
        &mut client,
        pb::EventFilter {
            start_time: stored[2].occurred_at,
            end_time: stored[4].occurred_at,
            ..filter("acme")
        },
    )
    .await;
    assert_eq!(
        window.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [3, 4],
        "from the start inclusive to the end exclusive"
    );

    let first_page = client
        .query(pb::QueryRequest {
            filter: Some(filter("acme")),
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(first_page.events.len(), 2);
    let second_page = client
        .query(pb::QueryRequest {
            filter: Some(filter("acme")),
            page_size: 2,
            page_token: first_page.next_page_token,
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(
        second_page
            .events
            .iter()
            .map(|e| e.sequence)
            .collect::<Vec<_>>(),
        [3, 4]
    );
    f.instance.stop().await;
}

async fn reappend_is_a_no_op(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    let events: Vec<Event> = (0..4).map(|n| event("acme", n)).collect();
    let first = client
        .append(wire(&events))
        .await
        .expect("append")
        .into_inner()
        .results;
    let mut retry = events.clone();
    retry.push(event("acme", 9));
    let second = client
        .append(wire(&retry))
        .await
        .expect("re-append")
        .into_inner()
        .results;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!((a.sequence, b.duplicate), (b.sequence, true));
    }
    assert_eq!((second[4].sequence, second[4].duplicate), (5, false));
    assert_eq!(query_all(&mut client, filter("acme")).await.len(), 5);
    assert!(verify(&mut client, "acme").await.ok);
    f.instance.stop().await;
}

async fn concurrent_appends_from_two_instances_form_one_gapless_chain(backend: &str) {
    let f = fixture(backend).await;
    let second = Instance::start(f.db.url(), &f.keys).await;
    let mut tasks = Vec::new();
    for task in 0..8 {
        let mut client = if task % 2 == 0 {
            f.instance.client(&f.keys.acme)
        } else {
            second.client(&f.keys.acme)
        };
        tasks.push(tokio::spawn(async move {
            for round in 0..25 {
                let batch: Vec<Event> = (0..4)
                    .map(|i| event("acme", task * 1000 + round * 4 + i))
                    .collect();
                client
                    .append(wire(&batch))
                    .await
                    .expect("append under contention");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let mut client = f.instance.client(&f.keys.acme);
    let mut sequences: Vec<u64> = query_all(&mut client, filter("acme"))
        .await
        .iter()
        .map(|e| e.sequence)
        .collect();
    sequences.sort_unstable();
    assert_eq!(
        sequences,
        (1..=800).collect::<Vec<u64>>(),
        "every event once, no gaps"
    );
    let verification = verify(&mut second.client(&f.keys.acme), "acme").await;
    assert!(verification.ok, "{}", verification.reason);
    assert_eq!(verification.events_checked, 800);
    second.stop().await;
    f.instance.stop().await;
}

async fn tampering_is_reported_with_its_sequence(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    let events: Vec<Event> = (0..10).map(|n| event("acme", n)).collect();
    client.append(wire(&events)).await.expect("append");
    assert!(verify(&mut client, "acme").await.ok);

    f.db.tamper(
        "UPDATE audit_events SET outcome = 'failure' WHERE tenant = 'acme' AND sequence = 4",
    )
    .await;
    let altered = verify(&mut client, "acme").await;
    assert!(!altered.ok);
    assert_eq!(altered.first_broken_sequence, Some(4));
    assert!(altered.reason.contains("altered"), "{}", altered.reason);

    f.db.tamper(
        "UPDATE audit_events SET outcome = 'success' WHERE tenant = 'acme' AND sequence = 4",
    )
    .await;
    f.db.tamper("DELETE FROM audit_events WHERE tenant = 'acme' AND sequence = 7")
        .await;
    let deleted = verify(&mut client, "acme").await;
    assert_eq!(deleted.first_broken_sequence, Some(7), "{}", deleted.reason);
    assert!(deleted.reason.contains("missing"), "{}", deleted.reason);

    f.db.tamper("DELETE FROM audit_events WHERE tenant = 'acme' AND sequence >= 7")
        .await;
    let truncated = verify(&mut client, "acme").await;
    assert_eq!(
        truncated.first_broken_sequence,
        Some(7),
        "deleting the newest events is caught too: {}",
        truncated.reason
    );
    f.instance.stop().await;
}

async fn every_hashed_column_a_forged_tail_and_a_forged_checkpoint_are_caught(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    let events: Vec<Event> = (0..20).map(|n| event("acme", n)).collect();
    client.append(wire(&events)).await.expect("append");
    assert!(verify(&mut client, "acme").await.ok);
    // Each column a hash covers, changed on its own row: newest row first, so the first broken
    // sequence verification reports is always the row just changed.
    let changes = [
        "event_id = event_id || '0'",
        "occurred_at_us = occurred_at_us + 1",
        "recorded_at_us = recorded_at_us + 1",
        "actor_service = 'token-vault'",
        "actor_identifier = 'someone-else'",
        "connection_name = 'asana-other'",
        "identifier = 'user_x'",
        "asana_user_gid = '999'",
        "account_id = 'acct-x'",
        "credential_version = credential_version + 10",
        "action = 'tool.hidden'",
        "outcome = 'failure'",
        "details = '{\"n\":999}'",
        "trace_id = '0af7651916cd43dd8448eb211c80319c'",
    ];
    for (i, change) in changes.iter().enumerate().rev() {
        let sequence = i + 3;
        f.db.tamper(&format!(
            "UPDATE audit_events SET {change} WHERE tenant = 'acme' AND sequence = {sequence}"
        ))
        .await;
        let verified = verify(&mut client, "acme").await;
        assert_eq!(
            verified.first_broken_sequence,
            Some(sequence as u64),
            "{change}: {}",
            verified.reason
        );
    }
    f.instance.stop().await;

    // A row appended behind the service's back, with a correct link and hash, is past the
    // chain's head.
    let g = fixture(backend).await;
    let mut client = g.instance.client(&g.keys.acme);
    client
        .append(wire(&(0..3).map(|n| event("acme", n)).collect::<Vec<_>>()))
        .await
        .expect("append");
    g.db.tamper(
        "INSERT INTO audit_events SELECT tenant, sequence + 1, event_id || 'f', occurred_at_us, \
         recorded_at_us, actor_service, actor_identifier, connection_name, identifier, \
         asana_user_gid, account_id, credential_version, action, outcome, details, trace_id, \
         hash, hash FROM audit_events WHERE tenant = 'acme' AND sequence = 3",
    )
    .await;
    let forged = verify(&mut client, "acme").await;
    assert!(!forged.ok, "a row past the head: {forged:?}");
    assert_eq!(forged.first_broken_sequence, Some(4), "{}", forged.reason);
    // And so is a row of a tenant that has no chain at all.
    g.db.tamper(
        "INSERT INTO audit_events SELECT 'globex', sequence, event_id || 'g', occurred_at_us, \
         recorded_at_us, actor_service, actor_identifier, connection_name, identifier, \
         asana_user_gid, account_id, credential_version, action, outcome, details, trace_id, \
         prev_hash, hash FROM audit_events WHERE tenant = 'acme' AND sequence = 1",
    )
    .await;
    let orphan = verify(&mut g.instance.client(&g.keys.operator), "globex").await;
    assert_eq!(orphan.first_broken_sequence, Some(1), "{}", orphan.reason);
    g.instance.stop().await;

    // A checkpoint changed after a purge breaks the link to what remains.
    let h = fixture(backend).await;
    let mut client = h.instance.client(&h.keys.acme);
    client
        .append(wire(&(0..5).map(|n| event("acme", n)).collect::<Vec<_>>()))
        .await
        .expect("append");
    let cut = agentauth_audit::event::wire_timestamp(chrono::Utc::now());
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(1),
        async {
            chrono::Utc::now().timestamp_micros()
                > cut.seconds * 1_000_000 + i64::from(cut.nanos / 1000)
        },
        "the clock moves past the cut"
    );
    client
        .append(wire(&(5..8).map(|n| event("acme", n)).collect::<Vec<_>>()))
        .await
        .expect("append");
    h.instance
        .client(&h.keys.operator)
        .purge_before(pb::PurgeBeforeRequest {
            tenant: "acme".into(),
            before: Some(cut),
        })
        .await
        .expect("purge");
    assert!(verify(&mut client, "acme").await.ok);
    h.db.tamper(&format!(
        "UPDATE audit_checkpoints SET hash = {} WHERE tenant = 'acme'",
        match h.db {
            Db::Postgres(_) =>
                "decode('00000000000000000000000000000000000000000000000000000000000000ff', 'hex')",
            Db::Sqlite(_) => "X'00000000000000000000000000000000000000000000000000000000000000ff'",
        }
    ))
    .await;
    let broken = verify(&mut client, "acme").await;
    assert_eq!(broken.first_broken_sequence, Some(6), "{}", broken.reason);
    h.instance.stop().await;
}

async fn sql_updates_and_deletes_are_refused(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    client
        .append(wire(&[event("acme", 1), event("acme", 2)]))
        .await
        .expect("append");
    for sql in [
        "UPDATE audit_events SET action = 'tool.hidden' WHERE sequence = 1",
        "DELETE FROM audit_events WHERE sequence = 2",
    ] {
        let error = f.db.raw(sql).await.expect_err("the database refuses it");
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
    if let Db::Postgres(db) = &f.db {
        f.db.raw("TRUNCATE audit_events")
            .await
            .expect_err("truncate refused");
        // A login in the service's role cannot even attempt it.
        let login = format!("audit_writer_{}", uuid::Uuid::now_v7().simple());
        f.db.raw(&format!(
            "CREATE ROLE {login} LOGIN IN ROLE agentauth_audit_writer"
        ))
        .await
        .expect("role");
        let url = db.url().replacen("postgres@", &format!("{login}@"), 1);
        let mut as_writer = sqlx::PgConnection::connect(&url)
            .await
            .expect("connect as writer");
        as_writer
            .execute("SET ROLE agentauth_audit_writer")
            .await
            .expect("set role");
        let error = as_writer
            .execute("DELETE FROM audit_events")
            .await
            .expect_err("no privilege");
        assert!(error.to_string().contains("permission denied"), "{error}");
        as_writer.close().await.ok();
        f.db.raw(&format!("DROP OWNED BY {login}; DROP ROLE {login}"))
            .await
            .ok();
    }
    assert_eq!(query_all(&mut client, filter("acme")).await.len(), 2);
    assert!(verify(&mut client, "acme").await.ok);
    f.instance.stop().await;
}

async fn purge_leaves_a_chain_that_still_verifies(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    client
        .append(wire(&(0..10).map(|n| event("acme", n)).collect::<Vec<_>>()))
        .await
        .expect("append");
    let cut = agentauth_audit::event::wire_timestamp(chrono::Utc::now());
    agentauth_testkit::assert_eventually!(
        Duration::from_secs(1),
        async {
            chrono::Utc::now().timestamp_micros()
                > cut.seconds * 1_000_000 + i64::from(cut.nanos / 1000)
        },
        "the clock moves past the cut"
    );
    client
        .append(wire(
            &(10..20).map(|n| event("acme", n)).collect::<Vec<_>>(),
        ))
        .await
        .expect("append");

    let refused = client
        .purge_before(pb::PurgeBeforeRequest {
            tenant: "acme".into(),
            before: Some(cut),
        })
        .await
        .expect_err("only operators purge");
    assert_eq!(refused.code(), Code::PermissionDenied);

    let mut operator = f.instance.client(&f.keys.operator);
    let future = operator
        .purge_before(pb::PurgeBeforeRequest {
            tenant: "acme".into(),
            before: Some(agentauth_audit::event::wire_timestamp(
                chrono::Utc::now() + chrono::TimeDelta::minutes(5),
            )),
        })
        .await
        .expect_err("a cut in the future");
    assert_eq!(future.code(), Code::InvalidArgument);
    assert_eq!(query_all(&mut client, filter("acme")).await.len(), 20);
    let purged = operator
        .purge_before(pb::PurgeBeforeRequest {
            tenant: "acme".into(),
            before: Some(cut),
        })
        .await
        .expect("purge")
        .into_inner();
    assert_eq!(purged.events_purged, 10);
    assert_eq!(purged.checkpoint.as_ref().map(|c| c.sequence), Some(10));
    let remaining = query_all(&mut client, filter("acme")).await;
    assert_eq!(remaining.first().map(|e| e.sequence), Some(11));
    let record = remaining.last().expect("the purge's own event");
    assert_eq!(
        (record.sequence, record.action.as_str()),
        (21, action::AUDIT_PURGED)
    );
    let actor = record.actor.as_ref().expect("actor");
    assert_eq!(
        (actor.service.as_str(), actor.identifier.as_str()),
        ("audit-log", "operator"),
        "the purge names the operator who ran it"
    );
    let details: serde_json::Value = serde_json::from_str(&record.details_json).expect("json");
    assert_eq!(details["events_purged"], 10);
    let verification = verify(&mut client, "acme").await;
    assert!(verification.ok, "{}", verification.reason);
    assert_eq!(verification.events_checked, 11);
    client
        .append(wire(&[event("acme", 99)]))
        .await
        .expect("append after purge");
    assert!(verify(&mut client, "acme").await.ok);
    f.instance.stop().await;
}

async fn events_are_recorded_only_in_their_callers_name(backend: &str) {
    let f = fixture(backend).await;
    let mut writer = f.instance.client(&f.keys.acme);
    let mut forged = event("acme", 1);
    forged.actor.service = "token-vault".into();
    let status = writer
        .append(wire(&[event("acme", 0), forged]))
        .await
        .expect_err("connector-executor writes as token-vault");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        status.get_details_error_info().expect("ErrorInfo").reason,
        "ACTOR_MISMATCH"
    );

    let mut ahead = event("acme", 2);
    ahead.occurred_at = chrono::Utc::now() + chrono::TimeDelta::minutes(30);
    let status = writer
        .append(wire(&[ahead]))
        .await
        .expect_err("half an hour in the future");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations[0]
            .field,
        "events[0].occurred_at"
    );
    let mut skewed = event("acme", 3);
    skewed.occurred_at = chrono::Utc::now() + chrono::TimeDelta::seconds(30);
    writer
        .append(wire(&[skewed]))
        .await
        .expect("a clock 30 s ahead is within the allowed skew");

    for (who, key) in [
        ("compliance", &f.keys.compliance),
        ("operator", &f.keys.operator),
    ] {
        let status = f
            .instance
            .client(key)
            .append(wire(&[event("acme", 4)]))
            .await
            .expect_err("readers and operators do not append");
        assert_eq!(status.code(), Code::PermissionDenied, "{who}");
        assert_eq!(
            status.get_details_error_info().expect("ErrorInfo").reason,
            "RPC_NOT_ALLOWED",
            "{who}"
        );
    }
    let stored = query_all(&mut writer, filter("acme")).await;
    assert_eq!(stored.len(), 1, "only the skewed event was stored");
    let received = stored[0].recorded_at.expect("the server's receive time");
    let occurred = stored[0].occurred_at.expect("the producer's time");
    assert!(
        received.seconds < occurred.seconds,
        "both times are kept: recorded_at is this server's"
    );
    f.instance.stop().await;
}

async fn malformed_requests_are_invalid_and_change_nothing(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    client
        .append(wire(&[event("acme", 1)]))
        .await
        .expect("append");

    let mut missing_tenant = pb::Event::from(event("acme", 2));
    missing_tenant.tenant.clear();
    let batch = pb::AppendRequest {
        events: vec![pb::Event::from(event("acme", 3)), missing_tenant],
    };
    let status = client.append(batch).await.expect_err("invalid event");
    assert_eq!(status.code(), Code::InvalidArgument);
    let violations = status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations;
    assert_eq!(violations[0].field, "events[1].tenant");

    let oversize = wire(
        &(0..audit_log::MAX_BATCH + 1)
            .map(|n| event("acme", n))
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        client.append(oversize).await.expect_err("oversize").code(),
        Code::InvalidArgument
    );

    let no_tenant = client
        .query(pb::QueryRequest {
            filter: Some(filter("")),
            ..Default::default()
        })
        .await;
    assert_eq!(
        no_tenant.expect_err("tenant required").code(),
        Code::InvalidArgument
    );
    let stored = query_all(&mut client, filter("acme")).await;
    let backwards = pb::EventFilter {
        start_time: stored[0].recorded_at,
        end_time: stored[0].occurred_at.map(|mut t| {
            t.seconds -= 60;
            t
        }),
        ..filter("acme")
    };
    let status = client
        .query(pb::QueryRequest {
            filter: Some(backwards),
            ..Default::default()
        })
        .await
        .expect_err("bad range");
    assert_eq!(status.code(), Code::InvalidArgument);
    let bad_token = client
        .query(pb::QueryRequest {
            filter: Some(filter("acme")),
            page_token: "zz".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(bad_token.code(), Code::InvalidArgument);

    let other_tenant = client
        .append(wire(&[event("acme", 4), event("globex", 5)]))
        .await
        .expect_err("globex");
    assert_eq!(other_tenant.code(), Code::PermissionDenied);
    let read_other = client
        .query(pb::QueryRequest {
            filter: Some(filter("globex")),
            ..Default::default()
        })
        .await;
    assert_eq!(
        read_other.expect_err("globex").code(),
        Code::PermissionDenied
    );

    assert_eq!(
        query_all(&mut client, filter("acme")).await.len(),
        1,
        "nothing was appended by a refused request"
    );
    assert!(verify(&mut client, "acme").await.ok);
    f.instance.stop().await;
}

async fn export_streams_every_event_in_both_formats(backend: &str) {
    let f = fixture(backend).await;
    let mut client = f.instance.client(&f.keys.acme);
    for chunk in 0..5 {
        let batch: Vec<Event> = (0..1000).map(|n| event("acme", chunk * 1000 + n)).collect();
        client.append(wire(&batch)).await.expect("append");
    }
    for (format, header) in [(pb::ExportFormat::Ndjson, 0), (pb::ExportFormat::Csv, 1)] {
        let mut stream = client
            .export(pb::ExportRequest {
                filter: Some(filter("acme")),
                format: format.into(),
            })
            .await
            .expect("export")
            .into_inner();
        let mut text = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = stream.message().await.expect("chunk") {
            chunks += 1;
            text.extend(chunk.data);
        }
        let text = String::from_utf8(text).expect("utf-8");
        assert_eq!(text.lines().count(), 5000 + header, "{format:?}");
        assert!(chunks > 1, "{format:?} arrived in one piece");
        if format == pb::ExportFormat::Ndjson {
            let last: serde_json::Value =
                serde_json::from_str(text.lines().last().expect("line")).expect("json");
            assert_eq!(last["sequence"], 5000);
        } else {
            assert!(text.starts_with("sequence,event_id,tenant,"));
        }
    }
    let unspecified = client
        .export(pb::ExportRequest {
            filter: Some(filter("acme")),
            format: 0,
        })
        .await;
    assert_eq!(
        unspecified.map(|_| ()).expect_err("format required").code(),
        Code::InvalidArgument
    );
    f.instance.stop().await;
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case("postgres").await })*
        }
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case("sqlite").await })*
        }
    };
}

on_both_backends!(
    append_and_query_round_trip,
    reappend_is_a_no_op,
    concurrent_appends_from_two_instances_form_one_gapless_chain,
    tampering_is_reported_with_its_sequence,
    every_hashed_column_a_forged_tail_and_a_forged_checkpoint_are_caught,
    sql_updates_and_deletes_are_refused,
    purge_leaves_a_chain_that_still_verifies,
    malformed_requests_are_invalid_and_change_nothing,
    events_are_recorded_only_in_their_callers_name,
    export_streams_every_event_in_both_formats,
);
