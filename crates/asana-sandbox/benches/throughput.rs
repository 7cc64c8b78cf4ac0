//! The sandbox's benchmark (not a test): `GET /api/1.0/tasks/{gid}` throughput, beside a
//! baseline measured in the same run: a bare axum route answering the same JSON with no auth,
//! limits, validation or lookup, served and driven the same way.
//!
//! It reads what connector-executor's benchmark reads directly, driven the same way: the first
//! seeded task, 64 callers over one shared HTTP client, mimalloc (the sandbox binary's
//! allocator), so that the two benchmarks' figures for this route can be compared.
//!
//! `cargo bench -p asana-sandbox --bench throughput`

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use asana_sandbox::{Config, LimitConfig, Sandbox, seed};
use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The allocator of the sandbox binary (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CALLERS: usize = 64;
const RUN: Duration = Duration::from_secs(5);

/// Requests per second over `RUN`, from `CALLERS` callers sharing one keep-alive client.
async fn drive(url: String, token: Option<&'static str>) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN;
    let mut tasks = Vec::new();
    let client = reqwest::Client::new();
    for _ in 0..CALLERS {
        let client = client.clone();
        let url = url.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let mut request = client.get(&url);
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.expect("request");
                assert!(response.status().is_success(), "{}", response.status());
                response.bytes().await.expect("body");
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / RUN.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let limits = LimitConfig {
        paid_per_minute: usize::MAX,
        max_reads_in_flight: u32::MAX,
        ..LimitConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let sandbox = Sandbox::new(Config {
        public_url: format!("http://{address}"),
        limits,
        ..Config::default()
    });
    let (gid, body) = {
        let world = sandbox.world();
        let task = world
            .all("task", |_| true)
            .next()
            .cloned()
            .expect("a seeded task");
        (
            task["gid"].as_str().unwrap_or_default().to_owned(),
            serde_json::json!({"data": task}),
        )
    };
    tokio::spawn(sandbox.serve(listener, CancellationToken::new()));

    let bare = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bare_address = bare.local_addr().expect("address");
    let bare_router = Router::new().route(
        "/api/1.0/tasks/{gid}",
        get(move || async move { axum::Json(body.clone()) }),
    );
    tokio::spawn(async move { axum::serve(bare, bare_router).await });

    println!(
        "asana-sandbox benchmark: GET /api/1.0/tasks/{{gid}} of the first seeded task, {CALLERS} callers on one client, {RUN:?} each"
    );
    let baseline = drive(format!("http://{bare_address}/api/1.0/tasks/{gid}"), None).await;
    let sandbox_rate = drive(
        format!("http://{address}/api/1.0/tasks/{gid}"),
        Some(seed::ALICE_PAT),
    )
    .await;
    println!("bare axum route, same JSON (baseline)  {baseline:>9.0} requests/s");
    println!(
        "asana-sandbox (auth, limits, spec, lookup) {sandbox_rate:>9.0} requests/s  ({:.2}x baseline)",
        sandbox_rate / baseline
    );
}
