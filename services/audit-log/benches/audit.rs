//! audit-log's benchmark (not a test): ingest rate on PostgreSQL and Query latency over
//! 1,000,000 stored events, each beside a baseline measured in the same run.
//!
//! `cargo bench -p audit-log --bench audit` (needs the machine's PostgreSQL).

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::{Duration, Instant};

use agentauth_audit::{Event, Outcome, action};
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_grpc::{ApiKey, CallerConfig, ServerConfig};
use agentauth_launch::Service as _;
use agentauth_proto::audit::v1 as pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_testkit::bench::{Latencies, millis as ms};
use agentauth_testkit::database::PostgresDatabase;
use audit_log::{AuditLogService, Config, DatabaseConfig};
use chrono::{TimeDelta, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use tokio::net::TcpListener;

const BATCH: usize = 500;
const WRITERS: usize = 4;
const INGEST_EVENTS: usize = 200_000;
const STORED_EVENTS: usize = 1_000_000;
const DAYS: i64 = 30;
const QUERIES: usize = 300;

fn event(tenant: &str, n: usize, at: chrono::DateTime<Utc>) -> pb::Event {
    let mut event = Event::new(
        tenant,
        "connector-executor",
        action::TOOL_EXECUTED,
        Outcome::Success,
    );
    event.occurred_at = at;
    event.subject.identifier = Some(format!("user_{}", n % 50));
    event.subject.connection_name = Some("asana".into());
    event.details.insert("tool".into(), "asana_task_get".into());
    event.details.insert("status".into(), 200.into());
    event.details.insert("latency_ms".into(), (n % 97).into());
    pb::Event::from(event)
}

async fn start(db: &str, key: &ApiKey) -> AuditLogClient<AuthenticatedChannel> {
    let config = Config {
        server: ServerConfig {
            callers: vec![CallerConfig {
                name: "connector-executor".into(),
                key_sha256: key.hash(),
                previous_key_sha256: None,
                tenants: vec!["*".into()],
                connections: vec!["*".into()],
                tools: vec!["*".into()],
                roles: vec!["writer".into(), "reader".into()],
                rpcs: Vec::new(),
            }],
            ..ServerConfig::default()
        },
        database: DatabaseConfig {
            url: db.to_owned(),
            max_connections: 16,
            role: None,
        },
        ..Default::default()
    };
    let service = AuditLogService::new(config).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(service.run(listener, tokio_util::sync::CancellationToken::new()));
    agentauth_testkit::wait_serving(address, "", Duration::from_secs(30))
        .await
        .expect("serving");
    AuditLogClient::new(channel(&format!("http://{address}"), Some(key)).expect("channel"))
}

/// Events/s for `total` events sent by `WRITERS` concurrent clients in batches, spread over
/// `tenants` tenants.
async fn ingest(
    client: &AuditLogClient<AuthenticatedChannel>,
    total: usize,
    tenants: usize,
) -> f64 {
    let started = Instant::now();
    let per_writer = total / WRITERS;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = client.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..per_writer / BATCH {
                let tenant = format!("ingest-{}", (w + b) % tenants);
                let events = (0..BATCH).map(|i| event(&tenant, i, Utc::now())).collect();
                client
                    .append(pb::AppendRequest { events })
                    .await
                    .expect("append");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The same rows written by the same number of writers straight into a plain table: no
/// service, no hash chain, no lock. What PostgreSQL itself manages on this machine.
async fn baseline_ingest(pool: &PgPool, total: usize) -> f64 {
    pool.execute(
        "CREATE TABLE baseline (tenant TEXT, sequence BIGINT, event_id TEXT, occurred_at_us BIGINT, \
         actor_service TEXT, identifier TEXT, action TEXT, outcome TEXT, details TEXT, hash BYTEA)",
    )
    .await
    .expect("baseline table");
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        writers.push(tokio::spawn(async move {
            for b in 0..total / WRITERS / BATCH {
                let mut query = sqlx::QueryBuilder::new(
                    "INSERT INTO baseline (tenant, sequence, event_id, occurred_at_us, actor_service, identifier, action, outcome, details, hash) ",
                );
                query.push_values(0..BATCH, |mut row, i| {
                    let e = event("baseline", i, Utc::now());
                    row.push_bind(e.tenant)
                        .push_bind((w * 1_000_000 + b * BATCH + i) as i64)
                        .push_bind(e.event_id)
                        .push_bind(Utc::now().timestamp_micros())
                        .push_bind("connector-executor")
                        .push_bind(format!("user_{}", i % 50))
                        .push_bind(e.action)
                        .push_bind("success")
                        .push_bind(e.details_json)
                        .push_bind(vec![0u8; 32]);
                });
                query.build().execute(&pool).await.expect("baseline insert");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let db = PostgresDatabase::create()
        .await
        .expect("PostgreSQL on 127.0.0.1:5432");
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect(db.url())
        .await
        .expect("pool");
    let key = ApiKey::generate();
    let client = start(db.url(), &key).await;

    println!("audit-log benchmark: PostgreSQL, {WRITERS} writers, batches of {BATCH}");
    let baseline = baseline_ingest(&pool, INGEST_EVENTS).await;
    let one_tenant = ingest(&client, INGEST_EVENTS, 1).await;
    let many_tenants = ingest(&client, INGEST_EVENTS, 16).await;
    println!("ingest  baseline (plain INSERT, no chain)  {baseline:>9.0} events/s");
    println!(
        "ingest  Append, 1 tenant (one chain)       {one_tenant:>9.0} events/s  ({:.2}x baseline)",
        one_tenant / baseline
    );
    println!(
        "ingest  Append, 16 tenants                 {many_tenants:>9.0} events/s  ({:.2}x baseline)",
        many_tenants / baseline
    );

    // 1,000,000 events for one tenant, spread evenly over DAYS days.
    let start_at = Utc::now() - TimeDelta::days(DAYS);
    let step = TimeDelta::microseconds(DAYS * 86_400_000_000 / STORED_EVENTS as i64);
    let seeding = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut client = client.clone();
        writers.push(tokio::spawn(async move {
            for b in (w..STORED_EVENTS / BATCH).step_by(WRITERS) {
                let events = (0..BATCH)
                    .map(|i| {
                        let n = b * BATCH + i;
                        event("stored", n, start_at + step * n as i32)
                    })
                    .collect();
                client
                    .append(pb::AppendRequest { events })
                    .await
                    .expect("seed");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    println!(
        "seeded  {STORED_EVENTS} events over {DAYS} days in {:.1}s ({:.0} events/s)",
        seeding.elapsed().as_secs_f64(),
        STORED_EVENTS as f64 / seeding.elapsed().as_secs_f64()
    );
    pool.execute("ANALYZE").await.expect("analyze");

    let mut service = Vec::with_capacity(QUERIES);
    let mut direct = Vec::with_capacity(QUERIES);
    let mut client = client.clone();
    for q in 0..QUERIES {
        let day_start = start_at + TimeDelta::days((q as i64 * 7) % DAYS);
        let day_end = day_start + TimeDelta::days(1);
        let started = Instant::now();
        let page = client
            .query(pb::QueryRequest {
                filter: Some(pb::EventFilter {
                    tenant: "stored".into(),
                    start_time: Some(agentauth_audit::event::wire_timestamp(day_start)),
                    end_time: Some(agentauth_audit::event::wire_timestamp(day_end)),
                    ..Default::default()
                }),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("query")
            .into_inner();
        service.push(started.elapsed());
        assert_eq!(page.events.len(), 100);

        let started = Instant::now();
        let rows = sqlx::query(
            "SELECT * FROM audit_events WHERE tenant = $1 AND occurred_at_us >= $2 \
             AND occurred_at_us < $3 ORDER BY occurred_at_us, sequence LIMIT 100",
        )
        .bind("stored")
        .bind(day_start.timestamp_micros())
        .bind(day_end.timestamp_micros())
        .fetch_all(&pool)
        .await
        .expect("direct query");
        direct.push(started.elapsed());
        assert_eq!(rows.len(), 100);
    }
    let Latencies { p50, p99 } = Latencies::of(&mut service);
    let Latencies { p50: d50, p99: d99 } = Latencies::of(&mut direct);
    println!(
        "query   one tenant, one-day window, 100 per page, over {STORED_EVENTS} events ({QUERIES} queries)"
    );
    println!(
        "query   direct SQL (baseline)   p50 {:>7.2} ms   p99 {:>7.2} ms",
        ms(d50),
        ms(d99)
    );
    println!(
        "query   Query RPC               p50 {:>7.2} ms   p99 {:>7.2} ms   ({:.2}x / {:.2}x baseline)",
        ms(p50),
        ms(p99),
        ms(p50) / ms(d50),
        ms(p99) / ms(d99)
    );
}
