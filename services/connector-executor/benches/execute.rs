//! connector-executor's benchmark (not a test): an `asana_task_get` read through `ExecuteTool`
//! beside the same read sent straight to the sandbox with a plain HTTP client, in the same run,
//! against the same sandbox: the latency the executor adds (p50, p99 at concurrency 1) and its
//! throughput at concurrency 64 as a share of direct. The same read through the official Python
//! `asana` SDK shows what users would otherwise write by hand.
//!
//! `cargo bench -p connector-executor --bench execute` (needs the OpenBao dev server and the
//! Python SDK from `make tools`). The whole system runs in this process (token-vault, audit-log
//! on SQLite, the sandbox), so every component shares the machine's cores: audit-log's own
//! inserts and hashing are charged to the ExecuteTool path. `AGENTAUTH_BENCH_NO_AUDIT=1` runs
//! connector-executor without its audit sink, to show that share;
//! `AGENTAUTH_BENCH_AUDIT_DURABILITY=sync` with `[audit] durability = "sync"` (every event in
//! the fsynced journal before the call is answered), to show what that costs. At the end the
//! benchmark checks that audit-log recorded one event per call.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/support/system.rs"]
mod system;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentauth_proto::executor::v1 as pb;
use asana_sandbox::seed::ALICE_PAT;
use system::{Options, System, TENANT};

/// The allocator the service binaries use (see `src/main.rs`), so both paths run as deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SAMPLES: usize = 3000;
const WARMUP: usize = 300;
const CONCURRENCY: usize = 64;
const RUN: Duration = Duration::from_secs(4);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[derive(Clone)]
enum Path {
    Direct {
        http: reqwest::Client,
        url: String,
    },
    Executor {
        client: agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient<
            agentauth_grpc::client::AuthenticatedChannel,
        >,
        request: Box<pb::ExecuteToolRequest>,
    },
}

impl Path {
    async fn read(&self) {
        match self {
            Self::Direct { http, url } => {
                let answer = http
                    .get(url)
                    .bearer_auth(ALICE_PAT)
                    .send()
                    .await
                    .expect("sandbox answers");
                assert!(answer.status().is_success(), "{}", answer.status());
                answer.bytes().await.expect("body");
            }
            Self::Executor { client, request } => {
                let response = client
                    .clone()
                    .execute_tool(request.as_ref().clone())
                    .await
                    .expect("ExecuteTool")
                    .into_inner();
                assert!(!response.is_error, "{}", response.output_json);
            }
        }
    }

    async fn latencies(&self) -> (Duration, Duration) {
        for _ in 0..WARMUP {
            self.read().await;
        }
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let started = Instant::now();
            self.read().await;
            samples.push(started.elapsed());
        }
        samples.sort();
        (percentile(&samples, 0.50), percentile(&samples, 0.99))
    }

    /// Calls per second at [`CONCURRENCY`], and how many calls were made.
    async fn throughput(&self) -> (f64, u64) {
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + RUN;
        let workers: Vec<_> = (0..CONCURRENCY)
            .map(|_| {
                let path = self.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        path.read().await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
        let calls = done.load(Ordering::Relaxed);
        (calls as f64 / RUN.as_secs_f64(), calls)
    }
}

fn python_sdk(api_base: &str, task: &str) -> Option<(f64, f64)> {
    let tools = std::env::var_os("AGENTAUTH_TOOLS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools"));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/python/bench_asana_sdk.py");
    let output = std::process::Command::new(tools.join("venv/bin/python"))
        .arg(script)
        .args(["--host", api_base, "--token", ALICE_PAT, "--task", task])
        .args(["--count", &SAMPLES.to_string()])
        .output()
        .ok()?;
    if !output.status.success() {
        println!(
            "python asana SDK run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some((figures["p50_us"].as_f64()?, figures["p99_us"].as_f64()?))
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let auditing = std::env::var_os("AGENTAUTH_BENCH_NO_AUDIT").is_none();
    let durability = match std::env::var("AGENTAUTH_BENCH_AUDIT_DURABILITY").as_deref() {
        Ok("sync") => "sync",
        _ => "async",
    };
    let unlimited = asana_sandbox::LimitConfig {
        free_per_minute: 100_000_000,
        paid_per_minute: 100_000_000,
        max_reads_in_flight: 10_000,
        max_writes_in_flight: 10_000,
        search_per_minute: 100_000_000,
    };
    let system = System::start(Options {
        executor_toml: "[connections.asana-pat]\nrequests_per_minute = 100000000\n".to_owned(),
        sandbox_limits: unlimited,
        audit: auditing,
        audit_durability: durability,
        // The emitter's default, as deployed.
        audit_flush_interval: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    system.connect_pat("alice", ALICE_PAT).await;
    let api_base = format!("{}/api/1.0", system.sandbox_url);
    let task = system
        .execute(
            "asana-pat",
            "alice",
            "asana_task_create",
            serde_json::json!({"workspace": "1200000000000001", "name": "benchmark task"}),
        )
        .await
        .expect("task created");
    let task: serde_json::Value = serde_json::from_str(&task.output_json).expect("json");
    let gid = task["gid"].as_str().expect("gid").to_owned();

    let direct = Path::Direct {
        http: reqwest::Client::new(),
        url: format!("{api_base}/tasks/{gid}"),
    };
    let executor = Path::Executor {
        client: system.executor(),
        request: Box::new(pb::ExecuteToolRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            tool_name: "asana_task_get".into(),
            input_json: serde_json::json!({ "task_gid": gid }).to_string(),
            options: None,
        }),
    };

    let (direct_p50, direct_p99) = direct.latencies().await;
    let (executor_p50, executor_p99) = executor.latencies().await;
    let (direct_rps, _) = direct.throughput().await;
    let (executor_rps, executor_calls) = executor.throughput().await;
    // Every call is audited: the task creation, the latency runs and the throughput run.
    let calls = 1 + (WARMUP + SAMPLES) as u64 + executor_calls;
    let audited = if auditing {
        Some(audited_within(&system, calls, Duration::from_secs(60)).await)
    } else {
        None
    };
    let sdk = python_sdk(&api_base, &gid);

    println!("connector-executor: asana_task_get via ExecuteTool vs the same GET sent directly");
    let audit = match (auditing, durability) {
        (false, _) => "audit sink off",
        (true, "sync") => {
            "every call audited to audit-log on SQLite, in this process, durability = sync"
        }
        (true, _) => "every call audited to audit-log on SQLite, in this process",
    };
    println!(
        "(sandbox in-process, {audit}; {SAMPLES} sequential reads, then {CONCURRENCY} concurrent for {RUN:?})\n"
    );
    println!("| path | p50 | p99 | throughput at {CONCURRENCY} |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| direct HTTP (reqwest, baseline) | {:.0} µs | {:.0} µs | {direct_rps:.0}/s |",
        micros(direct_p50),
        micros(direct_p99)
    );
    println!(
        "| ExecuteTool | {:.0} µs | {:.0} µs | {executor_rps:.0}/s |",
        micros(executor_p50),
        micros(executor_p99)
    );
    if let Some((p50, p99)) = sdk {
        println!("| official Python `asana` SDK, direct | {p50:.0} µs | {p99:.0} µs | — |");
    }
    println!();
    println!(
        "added latency: p50 {:.0} µs (goal ≤ 300 µs), p99 {:.0} µs (goal ≤ 2000 µs)",
        micros(executor_p50) - micros(direct_p50),
        micros(executor_p99) - micros(direct_p99)
    );
    println!(
        "throughput ratio ExecuteTool / direct: {:.2} (goal ≥ 0.50)",
        executor_rps / direct_rps
    );
    if let Some((p50, _)) = sdk {
        println!(
            "ExecuteTool p50 / Python SDK p50: {:.2}",
            micros(executor_p50) / p50
        );
    }
    if let Some(audited) = audited {
        println!("audit events recorded: {audited} of {calls} calls");
    }
}

/// How many `tool.executed` events audit-log holds once it stops growing or reaches `calls`.
async fn audited_within(system: &System, calls: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let audited = system
            .audit_events(TENANT)
            .await
            .iter()
            .filter(|e| e.action == "tool.executed")
            .count() as u64;
        if audited >= calls || Instant::now() > deadline {
            return audited;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
