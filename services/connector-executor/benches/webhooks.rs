//! What the webhook intake costs (a benchmark, not a test): signed deliveries of one new event
//! each, posted to a subscription's intake URL on one executor in this process (SQLite, audit
//! off), against a bare HTTP handler that only answers 200 to the same requests (the
//! baseline), in interleaved rounds at concurrency 1 and 16; deliveries/s, p50, p99 and the
//! intake's ratio to the baseline are printed. Then intake-to-subscriber latency: each event
//! carries its send time, and a `SubscribeEvents` stream on the same executor measures when it
//! arrives (p50, p99), at one delivery at a time and at 16.
//!
//! `cargo bench -p connector-executor --bench webhooks` (needs the OpenBao dev server from
//! `make tools`).

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/support/system.rs"]
mod system;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentauth_proto::executor::v1 as pb;
use agentauth_testkit::bench::{Latencies, interleaved, keep_calling, micros, millis};
use asana_sandbox::seed::ALICE_PAT;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use system::{Options, System, TENANT};

/// The allocator the service binaries use (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: [usize; 2] = [1, 16];
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(1);
const WARMUP: Duration = Duration::from_millis(200);

/// Where deliveries go, and how each is made.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    url: String,
    secret: Arc<str>,
    task: Arc<str>,
    sequence: Arc<AtomicU64>,
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl Target {
    /// One signed delivery of one event never sent before, carrying its send time.
    async fn deliver(&self) {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let body = json!({"events": [{
            "user": {"gid": "1", "resource_type": "user"},
            "created_at": "2026-12-07T00:00:00.000Z",
            "action": "changed",
            "resource": {"gid": *self.task, "resource_type": "task"},
            "parent": null,
            "change": {"field": "notes", "action": "changed",
                       "new_value": format!("{n}/{}", now_nanos())}
        }]})
        .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("key");
        mac.update(body.as_bytes());
        let signature = hex::encode(mac.finalize().into_bytes());
        let answer = self
            .http
            .post(&self.url)
            .header("X-Hook-Signature", signature)
            .body(body)
            .send()
            .await
            .expect("answered");
        assert_eq!(answer.status(), 200);
    }

    /// `concurrency` senders for `run`: every delivery's latency, and the time taken.
    async fn senders(&self, concurrency: usize, run: Duration) -> (Vec<Duration>, Duration) {
        let started = std::time::Instant::now();
        let this = self.clone();
        let samples = keep_calling(concurrency, run, move || {
            let this = this.clone();
            async move { this.deliver().await }
        })
        .await;
        (samples, started.elapsed())
    }
}

/// A handler that only answers 200, on its own loopback port.
async fn bare_handler() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let router = axum::Router::new().route(
        "/webhooks/{id}/{key}",
        axum::routing::post(|_: axum::body::Bytes| async { axum::http::StatusCode::OK }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}/webhooks/bare/key")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(drive());
}

async fn drive() {
    let system = System::start(Options {
        webhooks: true,
        audit: false,
        sandbox_limits: asana_sandbox::LimitConfig::unlimited(),
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    let (project, task) = {
        let world = system.sandbox.world();
        let task = world
            .all("task", |t| t["name"] == "Book the venue")
            .next()
            .expect("seeded task")
            .clone();
        (
            task["projects"][0]["gid"]
                .as_str()
                .expect("project")
                .to_owned(),
            task["gid"].as_str().expect("gid").to_owned(),
        )
    };
    let subscription = system
        .executor()
        .create_event_subscription(pb::CreateEventSubscriptionRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            resource_gid: project,
            filters_json: String::new(),
        })
        .await
        .expect("subscribed")
        .into_inner()
        .subscription
        .expect("subscription");
    let secret: Arc<str> = system
        .sandbox
        .world()
        .all("webhook", |w| w["gid"] == subscription.webhook_gid.as_str())
        .next()
        .and_then(|w| w["_sandbox_secret"].as_str().map(Arc::from))
        .expect("the webhook's secret");
    let http = reqwest::Client::new();
    let sequence = Arc::new(AtomicU64::new(0));
    let targets = [
        (
            "bare handler (200 only)",
            Target {
                http: http.clone(),
                url: bare_handler().await,
                secret: secret.clone(),
                task: Arc::from(task.as_str()),
                sequence: sequence.clone(),
            },
        ),
        (
            "intake (verify, store, 200)",
            Target {
                http,
                url: system
                    .sandbox
                    .world()
                    .all("webhook", |w| w["gid"] == subscription.webhook_gid.as_str())
                    .next()
                    .and_then(|w| w["target"].as_str().map(str::to_owned))
                    .expect("the webhook's target"),
                secret,
                task: Arc::from(task.as_str()),
                sequence,
            },
        ),
    ];
    println!(
        "connector-executor's webhook intake: signed deliveries of one new event each (one executor in this process, SQLite, audit off; {ROUNDS} interleaved rounds of {ROUND:?} after {WARMUP:?} per row)\n"
    );
    println!("| handler | concurrency | deliveries/s | p50 | p99 | vs bare (deliveries/s, p50) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &concurrency in &CONCURRENCY {
        let figures = interleaved(targets.len(), ROUNDS, WARMUP, ROUND, |index, run| {
            targets[index].1.senders(concurrency, run)
        })
        .await;
        let (base_rate, base) = figures[0];
        for ((name, _), (rate, latencies)) in targets.iter().zip(&figures) {
            println!(
                "| {name} | {concurrency} | {rate:.0} | {:.0} µs | {:.0} µs | {:.2}x, {:.2}x |",
                micros(latencies.p50),
                micros(latencies.p99),
                base_rate / rate,
                latencies.p50.as_secs_f64() / base.p50.as_secs_f64(),
            );
        }
    }
    println!(
        "\n(the ratio is the bare handler's deliveries/s over the intake's, and the intake's p50 over the bare handler's)\n"
    );

    // Intake to subscriber: the send time each event carries, against when the stream has it.
    println!("| intake to subscriber | concurrency | events | p50 | p99 |");
    println!("| --- | --- | --- | --- | --- |");
    let intake = targets[1].1.clone();
    for &concurrency in &CONCURRENCY {
        let mut stream = system
            .executor()
            .subscribe_events(pb::SubscribeEventsRequest {
                tenant: TENANT.into(),
                ..Default::default()
            })
            .await
            .expect("subscribe events")
            .into_inner();
        let (lag_tx, mut lag_rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Ok(Some(message)) = stream.message().await {
                let received = now_nanos();
                let change: serde_json::Value =
                    serde_json::from_str(&message.event.expect("event").change_json).expect("JSON");
                let sent_at: u128 = change["new_value"]
                    .as_str()
                    .and_then(|v| v.split_once('/'))
                    .and_then(|(_, at)| at.parse().ok())
                    .expect("a send time");
                let lag = Duration::from_nanos(
                    u64::try_from(received.saturating_sub(sent_at)).unwrap_or(u64::MAX),
                );
                if lag_tx.send(lag).is_err() {
                    return;
                }
            }
        });
        let (sent, _) = intake.senders(concurrency, ROUND * 2).await;
        let mut lags = Vec::with_capacity(sent.len());
        while lags.len() < sent.len() {
            let lag = tokio::time::timeout(Duration::from_secs(10), lag_rx.recv())
                .await
                .expect("every event reaches the stream")
                .expect("the reader runs");
            lags.push(lag);
        }
        reader.abort();
        let latencies = Latencies::of(&mut lags);
        println!(
            "| SubscribeEvents (same replica) | {concurrency} | {} | {:.2} ms | {:.2} ms |",
            lags.len(),
            millis(latencies.p50),
            millis(latencies.p99),
        );
    }
}
