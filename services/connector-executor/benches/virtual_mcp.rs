//! What the virtual MCP endpoint costs a tool call (a benchmark, not a test): the same read
//! (`asana_task_get` of the first seeded task, as alice on `asana-pat`) on one executor in
//! this process, two ways in one run: `ExecuteTool` over gRPC (the baseline), and `tools/call`
//! through a minted session's endpoint (Streamable HTTP, JSON responses, the 2025-11-25
//! session model: every request carries the bearer, `Mcp-Session-Id` and
//! `MCP-Protocol-Version`). Rounds interleave the two at concurrency 1 and 16; calls/s, p50,
//! p99 and the endpoint's ratio to the baseline are printed (goal: within 1.3×). Then what a
//! session costs: `MintMcpSession` end to end (the session recorded in SQLite; audit is off),
//! and signing and verifying one bearer.
//!
//! `cargo bench -p connector-executor --bench virtual_mcp` (needs the OpenBao dev server from
//! `make tools`).

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "../tests/support/system.rs"]
mod system;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::AuthenticatedChannel;
use agentauth_proto::executor::v1 as pb;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use agentauth_testkit::bench::{Latencies, interleaved, keep_calling, micros};
use asana_sandbox::seed::ALICE_PAT;
use connector_executor::bearer::{Claims, Keys};
use serde_json::{Value, json};
use system::{Options, System, TENANT};

/// The allocator the service binaries use (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: [usize; 2] = [1, 16];
const ROUNDS: usize = 4;
const ROUND: Duration = Duration::from_secs(1);
const WARMUP: Duration = Duration::from_millis(200);

/// One way of making the read.
#[derive(Clone)]
enum Path {
    Grpc {
        client: ConnectorExecutorClient<AuthenticatedChannel>,
        request: Arc<pb::ExecuteToolRequest>,
    },
    Endpoint {
        http: reqwest::Client,
        url: String,
        bearer: String,
        protocol_session: String,
        call: Arc<Value>,
    },
}

impl Path {
    async fn read(&self) {
        match self {
            Self::Grpc { client, request } => {
                let answer = client
                    .clone()
                    .execute_tool(request.as_ref().clone())
                    .await
                    .expect("ExecuteTool")
                    .into_inner();
                assert!(!answer.is_error, "{}", answer.output_json);
                // A client reads the answer: the tool's JSON, as the endpoint's client reads
                // its JSON-RPC message.
                let output: Value = serde_json::from_str(&answer.output_json).expect("JSON");
                std::hint::black_box(output);
            }
            Self::Endpoint {
                http,
                url,
                bearer,
                protocol_session,
                call,
            } => {
                let answer = http
                    .post(url)
                    .bearer_auth(bearer)
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2025-11-25")
                    .header("mcp-session-id", protocol_session)
                    .json(call.as_ref())
                    .send()
                    .await
                    .expect("the endpoint answers");
                assert!(answer.status().is_success(), "{}", answer.status());
                let result: Value = answer.json().await.expect("JSON-RPC");
                assert_eq!(result["result"]["isError"], false, "{result}");
                // The tool's JSON, as the gRPC client reads its output_json.
                let text = result["result"]["content"][0]["text"]
                    .as_str()
                    .expect("a text block");
                let output: Value = serde_json::from_str(text).expect("JSON");
                std::hint::black_box(output);
            }
        }
    }

    /// Every call's latency, from `concurrency` callers that keep calling for `run`, and
    /// how long they took.
    async fn callers(&self, concurrency: usize, run: Duration) -> (Vec<Duration>, Duration) {
        let started = Instant::now();
        let path = self.clone();
        let calls = keep_calling(concurrency, run, move || {
            let path = path.clone();
            async move { path.read().await }
        })
        .await;
        (calls, started.elapsed())
    }
}

fn unlimited(signing_key: &std::path::Path) -> Options {
    Options {
        executor_toml: format!(
            r#"
[limits]
reads_in_flight = 1000

[connections.asana-pat]
requests_per_minute = 1000000000

[[server.callers]]
name = "platform"
key_sha256 = "{}"
tenants = ["{TENANT}"]
roles = ["mcp"]

[[virtual_servers]]
name = "bench"
minters = ["platform"]

[[virtual_servers.tools]]
connection = "asana-pat"
tool = "asana_task_get"
"#,
            minter().hash()
        ),
        virtual_mcp_toml: vec![format!(
            "[[virtual_mcp.signing_keys]]\nid = \"bench\"\nkey_file = \"{}\"\n",
            signing_key.display()
        )],
        audit: false,
        sandbox_limits: asana_sandbox::LimitConfig::unlimited(),
        ..Options::default()
    }
}

/// The minter's key: one per run, the same for the config and the client.
fn minter() -> &'static ApiKey {
    static KEY: std::sync::OnceLock<ApiKey> = std::sync::OnceLock::new();
    KEY.get_or_init(ApiKey::generate)
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
    let mut key = tempfile::NamedTempFile::new().expect("key file");
    key.write_all(ApiKey::generate().expose().as_bytes())
        .expect("key");
    let system = System::start(unlimited(key.path())).await;
    system.connect_pat("alice", ALICE_PAT).await;
    let task = system
        .sandbox
        .world()
        .all("task", |_| true)
        .next()
        .and_then(|task| task["gid"].as_str().map(str::to_owned))
        .expect("a seeded task");
    let mut minting = ConnectorExecutorClient::new(
        agentauth_grpc::client::channel(&system.executor_url, Some(minter())).expect("channel"),
    );
    let mint = pb::MintMcpSessionRequest {
        tenant: TENANT.into(),
        identifier: "alice".into(),
        virtual_server: "bench".into(),
        ttl: None,
    };
    let session = minting
        .mint_mcp_session(mint.clone())
        .await
        .expect("minted")
        .into_inner();
    let http = reqwest::Client::new();
    let initialized = http
        .post(&session.url)
        .bearer_auth(&session.bearer_token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}}}),
        )
        .send()
        .await
        .expect("initialize");
    let protocol_session = initialized
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("Mcp-Session-Id")
        .to_owned();

    let input = json!({ "task_gid": task });
    let call = Arc::new(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "asana_task_get", "arguments": input}}));
    let paths = [
        (
            "ExecuteTool (gRPC)",
            Path::Grpc {
                // One channel, as the endpoint's one HTTP client.
                client: system.executor(),
                request: Arc::new(pb::ExecuteToolRequest {
                    tenant: TENANT.into(),
                    connection_name: "asana-pat".into(),
                    identifier: "alice".into(),
                    tool_name: "asana_task_get".into(),
                    input_json: input.to_string(),
                    options: None,
                }),
            },
        ),
        (
            "tools/call (virtual MCP)",
            Path::Endpoint {
                http,
                url: session.url.clone(),
                bearer: session.bearer_token.clone(),
                protocol_session,
                call,
            },
        ),
    ];
    println!(
        "connector-executor: asana_task_get as alice, ExecuteTool against the virtual MCP endpoint (one executor in this process, audit off; {ROUNDS} interleaved rounds of {ROUND:?} after {WARMUP:?} per row)\n"
    );
    println!("| path | concurrency | calls/s | p50 | p99 | vs ExecuteTool (calls/s, p50) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for &concurrency in &CONCURRENCY {
        let figures = interleaved(paths.len(), ROUNDS, WARMUP, ROUND, |index, run| {
            paths[index].1.callers(concurrency, run)
        })
        .await;
        let (base_rate, base) = figures[0];
        for ((name, _), (rate, latencies)) in paths.iter().zip(&figures) {
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
        "\n(the ratio is ExecuteTool's calls/s over the endpoint's, and the endpoint's p50 over ExecuteTool's: goal ≤ 1.3)"
    );

    // A session's own costs.
    let mut mints = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        minting
            .mint_mcp_session(mint.clone())
            .await
            .expect("minted");
        mints.push(started.elapsed());
    }
    let mints = Latencies::of(&mut mints);
    let keys = Keys::new(vec![
        ("new".into(), vec![1; 32]),
        ("old".into(), vec![2; 32]),
    ])
    .expect("keys");
    let claims = Claims {
        sid: uuid::Uuid::now_v7().to_string(),
        srv: "bench".into(),
        ten: TENANT.into(),
        idn: "alice".into(),
        by: "platform".into(),
        exp: i64::MAX,
    };
    const N: u32 = 100_000;
    let started = Instant::now();
    let mut bearer = String::new();
    for _ in 0..N {
        bearer = std::hint::black_box(keys.sign(std::hint::black_box(&claims)));
    }
    let sign = started.elapsed() / N;
    let started = Instant::now();
    for _ in 0..N {
        std::hint::black_box(
            keys.verify(std::hint::black_box(&bearer), 0)
                .expect("verifies"),
        );
    }
    let verify = started.elapsed() / N;
    println!(
        "\nMintMcpSession end to end (c = 1, 200 mints, recorded in SQLite): p50 {:.0} µs, p99 {:.0} µs",
        micros(mints.p50),
        micros(mints.p99)
    );
    println!(
        "a bearer: sign {:.2} µs, verify {:.2} µs (HMAC-SHA256, {N} each)",
        micros(sign),
        micros(verify)
    );
}
