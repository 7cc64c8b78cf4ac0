//! What drift pinning costs an MCP tool call (a benchmark, not a test): `ExecuteTool` of the
//! sandbox's `get_me` on `asana-mcp`, sequentially, on two whole systems in this process
//! that differ only in pinning: one without a schema-watcher (the baseline), one whose
//! connection is watched in pinned mode with `get_me` approved, so every call is checked
//! against the approvals the executor caches. Rounds alternate between the two; p50 and p99
//! of each and their ratio are printed. Goal: no measurable change in p50.
//!
//! `cargo bench -p connector-executor --bench pinning` (needs the OpenBao dev server from
//! `make tools`).

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/support/system.rs"]
mod system;

use std::time::{Duration, Instant};

use agentauth_proto::watcher::v1 as watcher;
use agentauth_testkit::bench::{Latencies, micros};
use serde_json::json;
use system::{Options, System, Watch};

const ROUNDS: usize = 8;
const CALLS: usize = 400;

async fn call(system: &System) -> Duration {
    let started = Instant::now();
    system
        .execute("asana-mcp", "alice", "get_me", json!({}))
        .await
        .expect("get_me runs");
    started.elapsed()
}

/// Both systems without rate limits: the benchmark measures the call, not its budget.
fn unlimited(watcher: bool) -> Options {
    Options {
        watcher,
        executor_toml: "[connections.asana-mcp]\nrequests_per_minute = 1000000000\n".to_owned(),
        sandbox_limits: asana_sandbox::LimitConfig::unlimited(),
        ..Options::default()
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let plain = System::start(unlimited(false)).await;
        plain.connect_oauth("asana-mcp", "alice").await;
        let pinned = System::start(unlimited(true)).await;
        pinned.connect_oauth("asana-mcp", "probe").await;
        pinned.connect_oauth("asana-mcp", "alice").await;
        let _watcher = pinned
            .start_watcher(Watch {
                auto_approve_first: true,
                interval: Duration::from_secs(3600),
                ..Watch::default()
            })
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let baseline = pinned
                .watcher()
                .get_snapshot(watcher::GetSnapshotRequest {
                    connection_name: "asana-mcp".into(),
                    selector: Some(watcher::get_snapshot_request::Selector::Alias(
                        watcher::SnapshotAlias::Baseline.into(),
                    )),
                })
                .await;
            if baseline.is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "no baseline within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for system in [&plain, &pinned] {
            for _ in 0..100 {
                call(system).await;
            }
        }
        let (mut unpinned, mut checked) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for (system, samples) in [(&plain, &mut unpinned), (&pinned, &mut checked)] {
                for _ in 0..CALLS {
                    samples.push(call(system).await);
                }
            }
        }
        let (base, with) = (Latencies::of(&mut unpinned), Latencies::of(&mut checked));
        println!(
            "ExecuteTool get_me on asana-mcp, c = 1, {} calls each, {ROUNDS} interleaved rounds",
            ROUNDS * CALLS
        );
        println!(
            "  not pinned        p50 {:>7.1} µs   p99 {:>7.1} µs",
            micros(base.p50),
            micros(base.p99)
        );
        println!(
            "  pinned, approved  p50 {:>7.1} µs   p99 {:>7.1} µs",
            micros(with.p50),
            micros(with.p99)
        );
        println!(
            "  pinned / not pinned: p50 {:.3}×, {:+.1} µs",
            with.p50.as_secs_f64() / base.p50.as_secs_f64(),
            micros(with.p50) - micros(base.p50)
        );
    });
}
