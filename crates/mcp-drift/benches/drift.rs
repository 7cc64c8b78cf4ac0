//! The drift diff's cost (a benchmark, not a test): 1,000 tools of which 50 changed, against a
//! baseline measured in the same run, comparing the same two listings for plain equality
//! (`serde_json` `==` tool by tool: the least any diff must do). Goal: the diff under 5 ms.
//!
//! `cargo bench -p mcp-drift --bench drift`

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::time::{Duration, Instant};

use agentauth_testkit::bench::{millis as ms, percentile};
use mcp_drift::{Snapshot, diff};
use serde_json::{Value, json};

const TOOLS: usize = 1000;
const CHANGED: usize = 50;
const ROUNDS: usize = 200;

fn tool(n: usize) -> Value {
    json!({
        "name": format!("tool_{n:04}"),
        "title": format!("Tool {n}"),
        "description": format!("Does thing number {n} in the workspace."),
        "inputSchema": {
            "type": "object",
            "properties": {
                "workspace": {"type": "string", "description": "The workspace's gid."},
                "limit": {"type": "integer", "default": 20, "maximum": 100},
                "order": {"type": "string", "enum": ["asc", "desc"]},
                "fields": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["workspace"],
            "additionalProperties": false
        },
        "annotations": {"readOnlyHint": n.is_multiple_of(2)}
    })
}

/// The median of `rounds` timings of `work`.
fn median(mut work: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            work();
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    percentile(&times, 0.5)
}

fn main() {
    let old: Vec<Value> = (0..TOOLS).map(tool).collect();
    let mut new = old.clone();
    for (i, changed) in new.iter_mut().step_by(TOOLS / CHANGED).enumerate() {
        match i % 3 {
            0 => changed["inputSchema"]["required"] = json!(["workspace", "limit"]),
            1 => changed["inputSchema"]["properties"]["order"]["enum"] = json!(["asc"]),
            _ => changed["annotations"]["readOnlyHint"] = json!(false),
        }
    }
    let baseline = Snapshot::of(&old).expect("a listing");
    let current = Snapshot::of(&new).expect("a listing");
    let drift = diff(&baseline, &current);
    assert_eq!(drift.changed.len(), CHANGED);

    let equality = median(|| {
        let differing = old.iter().zip(&new).filter(|(a, b)| a != b).count();
        std::hint::black_box(differing);
    });
    let diffing = median(|| {
        std::hint::black_box(diff(&baseline, &current));
    });
    let hashing = median(|| {
        std::hint::black_box(Snapshot::of(&new).expect("a listing"));
    });
    println!("schema-watcher drift: {TOOLS} tools, {CHANGED} changed, median of {ROUNDS} rounds");
    println!(
        "plain equality of the two listings (baseline)  {:>8.3} ms",
        ms(equality)
    );
    println!(
        "diff against the baseline                      {:>8.3} ms  ({:.2}x baseline; goal < 5 ms)",
        ms(diffing),
        diffing.as_secs_f64() / equality.as_secs_f64()
    );
    println!(
        "snapshot of the listing (canonical JSON, SHA-256) {:>6.3} ms  ({:.2}x baseline)",
        ms(hashing),
        hashing.as_secs_f64() / equality.as_secs_f64()
    );
}
