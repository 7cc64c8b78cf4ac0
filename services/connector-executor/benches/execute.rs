//! connector-executor's overhead, measured against a minimal forwarder (a benchmark, not a
//! test): the same read of the first seeded task (the one the sandbox's benchmark reads),
//! `GET /tasks/{gid}`, four ways in one run.
//!
//! - (a) direct: the bench's HTTP client to the sandbox, decoding `data` as the executor does;
//! - (b) forwarder: a bare tonic server (this binary, re-run as its own process) that takes the
//!   same `ExecuteToolRequest`, sends one GET with one shared reqwest client and returns `data`
//!   — the same tonic, runtime, allocator, gRPC channel and HTTP client as the executor, and
//!   the production tracing subscriber, but no authentication, token, limits, validation or
//!   audit;
//! - (c) `ExecuteTool` on connector-executor with auditing on (audit-log in its own process, on
//!   SQLite) and (d) with its audit sink off;
//! - (e) as (d), with Asana's limits shared through Redis (`[limits.shared]`, the machine's
//!   Redis at 127.0.0.1:6379): one script call per request, and one more to give back its
//!   in-flight slot.
//!
//! Each path runs at concurrency 1, 16 and 64 over one gRPC channel (one HTTP client for
//! direct), in rounds that interleave the paths, and reports calls per second, p50/p99, and
//! the CPU time per call of the serving process (forwarder or executor, from `/proc`). Every service runs in its own process: the
//! sandbox, token-vault, audit-log, the two executors and the forwarder are this binary re-run
//! with `AGENTAUTH_BENCH_ROLE`, through the services' own `main` and with their allocator;
//! the client is this process.
//! All of them share the machine's cores, as they would any one host.
//!
//! `cargo bench -p connector-executor --bench execute` (needs the OpenBao dev server from
//! `make tools`). `AGENTAUTH_BENCH_AUDIT_DURABILITY=sync` runs (c) with `[audit] durability =
//! "sync"` (every event in the fsynced journal before the call is answered). At the end the
//! benchmark checks that audit-log recorded one event per audited call.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentauth_grpc::ApiKey;
use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_proto::audit::v1 as audit_pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use agentauth_proto::executor::v1 as pb;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use agentauth_proto::vault::v1 as vault_pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;
use agentauth_testkit::bench::{Latencies, cpu_time, keep_calling, micros};
use agentauth_testkit::process::ServiceProcess;
use agentauth_testkit::{free_port, openbao, wait_serving};
use asana_sandbox::seed::ALICE_PAT;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The allocator the service binaries use (see `src/main.rs`), for every process of the run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TENANT: &str = "acme";
const CONCURRENCY: [usize; 3] = [1, 16, 64];
/// Each path runs `ROUNDS` rounds of [`ROUND`], after [`WARMUP`] each, per concurrency.
const ROUNDS: usize = 4;
const WARMUP: Duration = Duration::from_millis(200);
const ROUND: Duration = Duration::from_secs(1);
const ROLE: &str = "AGENTAUTH_BENCH_ROLE";
const UPSTREAM: &str = "AGENTAUTH_BENCH_UPSTREAM";

fn main() -> ExitCode {
    match std::env::var(ROLE).as_deref() {
        Ok("connector-executor") => {
            agentauth_launch::main::<connector_executor::ConnectorExecutorService>()
        }
        Ok("token-vault") => agentauth_launch::main::<token_vault::TokenVaultService>(),
        Ok("audit-log") => agentauth_launch::main::<audit_log::AuditLogService>(),
        Ok("sandbox") => runtime().block_on(sandbox::serve()),
        Ok("forwarder") => runtime().block_on(forwarder::serve()),
        _ => runtime().block_on(drive()),
    }
}

/// The runtime every service's `main` builds (agentauth-launch).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `--listen ADDR` from the command line (the role processes are started with
/// `--config FILE --listen ADDR`).
fn listen_flag() -> SocketAddr {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .and_then(|a| a.parse().ok())
        .expect("--listen ADDR")
}

/// The sandbox process: seeded, with limits raised so that nothing is refused.
mod sandbox {
    use super::*;

    pub async fn serve() -> ExitCode {
        let address = listen_flag();
        let listener = tokio::net::TcpListener::bind(address).await.expect("bind");
        let unlimited = asana_sandbox::LimitConfig::unlimited();
        let sandbox = asana_sandbox::Sandbox::new(asana_sandbox::Config {
            public_url: format!("http://{address}"),
            seed: true,
            limits: unlimited,
            ..asana_sandbox::Config::default()
        });
        sandbox
            .serve(listener, tokio_util::sync::CancellationToken::new())
            .await
            .expect("sandbox serves");
        ExitCode::SUCCESS
    }
}

/// The envelope of one Asana object: `data`, kept as the raw JSON text it arrived as.
#[derive(Deserialize)]
struct Envelope {
    data: Box<RawValue>,
}

/// (b): a bare tonic server that answers `ExecuteTool` with one GET upstream.
mod forwarder {
    use agentauth_proto::executor::v1::connector_executor_server::{
        ConnectorExecutor, ConnectorExecutorServer,
    };
    use tonic::{Request, Response, Status};

    use super::*;

    struct Forwarder {
        http: reqwest::Client,
        upstream: String,
        authorization: reqwest::header::HeaderValue,
    }

    #[derive(Deserialize)]
    struct Input {
        task_gid: String,
    }

    #[tonic::async_trait]
    impl ConnectorExecutor for Forwarder {
        async fn execute_tool(
            &self,
            request: Request<pb::ExecuteToolRequest>,
        ) -> Result<Response<pb::ExecuteToolResponse>, Status> {
            let input: Input = serde_json::from_str(&request.get_ref().input_json)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let answer = self
                .http
                .get(format!("{}/tasks/{}", self.upstream, input.task_gid))
                .header(reqwest::header::AUTHORIZATION, self.authorization.clone())
                .send()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let body = answer
                .bytes()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let envelope: Envelope =
                serde_json::from_slice(&body).map_err(|e| Status::internal(e.to_string()))?;
            Ok(Response::new(pb::ExecuteToolResponse {
                output_json: envelope.data.get().to_owned(),
                route: pb::Route::Rest.into(),
                ..Default::default()
            }))
        }

        async fn execute_batch(
            &self,
            _: Request<pb::ExecuteBatchRequest>,
        ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn list_tools(
            &self,
            _: Request<pb::ListToolsRequest>,
        ) -> Result<Response<pb::ListToolsResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn proxy_request(
            &self,
            _: Request<pb::ProxyRequestRequest>,
        ) -> Result<Response<pb::ProxyRequestResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn mint_mcp_session(
            &self,
            _: Request<pb::MintMcpSessionRequest>,
        ) -> Result<Response<pb::MintMcpSessionResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn list_mcp_sessions(
            &self,
            _: Request<pb::ListMcpSessionsRequest>,
        ) -> Result<Response<pb::ListMcpSessionsResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn revoke_mcp_session(
            &self,
            _: Request<pb::RevokeMcpSessionRequest>,
        ) -> Result<Response<pb::RevokeMcpSessionResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        type SubscribeEventsStream = tonic::codegen::BoxStream<pb::SubscribeEventsResponse>;

        async fn subscribe_events(
            &self,
            _: Request<pb::SubscribeEventsRequest>,
        ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn create_event_subscription(
            &self,
            _: Request<pb::CreateEventSubscriptionRequest>,
        ) -> Result<Response<pb::CreateEventSubscriptionResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn list_event_subscriptions(
            &self,
            _: Request<pb::ListEventSubscriptionsRequest>,
        ) -> Result<Response<pb::ListEventSubscriptionsResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn delete_event_subscription(
            &self,
            _: Request<pb::DeleteEventSubscriptionRequest>,
        ) -> Result<Response<pb::DeleteEventSubscriptionResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn pause_event_subscription(
            &self,
            _: Request<pb::PauseEventSubscriptionRequest>,
        ) -> Result<Response<pb::PauseEventSubscriptionResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn resume_event_subscription(
            &self,
            _: Request<pb::ResumeEventSubscriptionRequest>,
        ) -> Result<Response<pb::ResumeEventSubscriptionResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        async fn list_upstream_tools(
            &self,
            _: Request<pb::ListUpstreamToolsRequest>,
        ) -> Result<Response<pb::ListUpstreamToolsResponse>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }

        type WatchUpstreamChangesStream =
            tonic::codegen::BoxStream<pb::WatchUpstreamChangesResponse>;

        async fn watch_upstream_changes(
            &self,
            _: Request<pb::WatchUpstreamChangesRequest>,
        ) -> Result<Response<Self::WatchUpstreamChangesStream>, Status> {
            Err(Status::unimplemented("the forwarder only reads"))
        }
    }

    pub async fn serve() -> ExitCode {
        let telemetry =
            agentauth_telemetry::init("forwarder", agentauth_telemetry::LogFormat::Text, "")
                .expect("the production tracing subscriber");
        let mut authorization =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {ALICE_PAT}")).expect("header");
        authorization.set_sensitive(true);
        let forwarder = Forwarder {
            http: reqwest::Client::new(),
            upstream: std::env::var(UPSTREAM).expect("the upstream's API base"),
            authorization,
        };
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(ConnectorExecutorServer::new(forwarder))
            .serve(listen_flag())
            .await
            .expect("the forwarder serves");
        telemetry.shutdown();
        ExitCode::SUCCESS
    }
}

/// One way of making the read.
#[derive(Clone)]
enum Path {
    Direct {
        http: reqwest::Client,
        url: String,
    },
    Grpc {
        client: ConnectorExecutorClient<AuthenticatedChannel>,
        request: Arc<pb::ExecuteToolRequest>,
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
                let body = answer.bytes().await.expect("body");
                let envelope: Envelope = serde_json::from_slice(&body).expect("an envelope");
                std::hint::black_box(envelope.data.get().to_owned());
            }
            Self::Grpc { client, request } => {
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

    /// One round: `concurrency` callers for [`ROUND`] after a [`WARMUP`].
    async fn round(&self, concurrency: usize, server: Option<u32>) -> Round {
        let warm_up = self.callers(concurrency, WARMUP).await.len() as u64;
        let cpu_before = server.map(|pid| cpu_time(pid).expect("cpu time"));
        let started = Instant::now();
        let samples = self.callers(concurrency, ROUND).await;
        let elapsed = started.elapsed();
        let cpu = server
            .zip(cpu_before)
            .map(|(pid, before)| cpu_time(pid).expect("cpu time") - before);
        Round {
            elapsed,
            warm_up,
            cpu,
            samples,
        }
    }

    /// Every call's latency, from `concurrency` callers that keep calling for `run`.
    async fn callers(&self, concurrency: usize, run: Duration) -> Vec<Duration> {
        let path = self.clone();
        keep_calling(concurrency, run, move || {
            let path = path.clone();
            async move { path.read().await }
        })
        .await
    }
}

/// What one round of one path measured.
struct Round {
    elapsed: Duration,
    warm_up: u64,
    cpu: Option<Duration>,
    samples: Vec<Duration>,
}

/// One path's figures at one concurrency, over all of its rounds.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rate: f64,
    latencies: Latencies,
    /// With the warm-ups'.
    all_calls: u64,
    cpu_per_call: Option<Duration>,
}

impl Figures {
    fn of(rounds: Vec<Round>) -> Self {
        let elapsed: Duration = rounds.iter().map(|r| r.elapsed).sum();
        let warm_up: u64 = rounds.iter().map(|r| r.warm_up).sum();
        let cpu: Option<Duration> = rounds.iter().map(|r| r.cpu).sum();
        let mut samples: Vec<Duration> = rounds.into_iter().flat_map(|r| r.samples).collect();
        let calls = samples.len() as u64;
        Self {
            rate: calls as f64 / elapsed.as_secs_f64(),
            latencies: Latencies::of(&mut samples),
            all_calls: warm_up + calls,
            cpu_per_call: cpu.map(|cpu| cpu / u32::try_from(calls.max(1)).unwrap_or(u32::MAX)),
        }
    }
}

/// This binary, re-run as `role` with `config`, on a free port.
fn start(role: &str, config: &str, env: &[(&str, &str)]) -> ServiceProcess {
    let program = std::env::current_exe().expect("this benchmark's path");
    let mut env = env.to_vec();
    env.push((ROLE, role));
    ServiceProcess::start_program(&program, config, &env, free_port())
        .unwrap_or_else(|e| panic!("{role}: {e:#}"))
}

/// A key file for `key` in `dir`.
fn key_file(dir: &std::path::Path, name: &str, key: &ApiKey) -> String {
    let path = dir.join(name);
    std::fs::write(&path, key.expose()).expect("key file");
    path.display().to_string()
}

fn caller(name: &str, key: &ApiKey, roles: &str) -> String {
    format!(
        "[[server.callers]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\ntenants = [\"*\"]\nroles = {roles}\n",
        key.hash()
    )
}

async fn serving(process: &ServiceProcess) {
    wait_serving(process.address(), "", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", process.log()));
}

/// Waits until `process` accepts connections (the forwarder has no health service).
async fn listening(process: &ServiceProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(process.address())
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "not listening:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn drive() -> ExitCode {
    let durability = match std::env::var("AGENTAUTH_BENCH_AUDIT_DURABILITY").as_deref() {
        Ok("sync") => "sync",
        _ => "async",
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let vault = openbao::shared();
    let (executor_key, agent, onboarding, auditor) = (
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
        ApiKey::generate(),
    );

    let sandbox = start("sandbox", "", &[]);
    let api = format!("{}/api/1.0", sandbox.url());
    let http = reqwest::Client::new();
    // The first seeded task, which the sandbox's own benchmark reads too. The seed is
    // deterministic: a sandbox built here holds the same world as the one serving.
    let task = asana_sandbox::Sandbox::new(asana_sandbox::Config {
        seed: true,
        ..asana_sandbox::Config::default()
    })
    .world()
    .all("task", |_| true)
    .next()
    .and_then(|task| task["gid"].as_str().map(str::to_owned))
    .expect("a seeded task");
    let task_url = format!("{api}/tasks/{task}");
    // The sandbox answers once it listens.
    while !http
        .get(&task_url)
        .bearer_auth(ALICE_PAT)
        .send()
        .await
        .is_ok_and(|answer| answer.status().is_success())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let audit_log = start(
        "audit-log",
        &format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}{}",
            caller("connector-executor", &executor_key, r#"["writer"]"#),
            caller("compliance", &auditor, r#"["reader"]"#),
        ),
        &[],
    );
    let token_vault = start(
        "token-vault",
        &format!(
            "[server]\nreadiness_interval = \"100ms\"\n{}{}\n[vault]\naddr = \"{}\"\npath_prefix = \"{}\"\n\n[oauth]\nhttp_listen = \"{}\"\n{}",
            caller("connector-executor", &executor_key, r#"["executor"]"#),
            caller("onboarding", &onboarding, r#"["onboarding"]"#),
            vault.addr(),
            openbao::fresh_prefix(),
            free_port(),
            agentauth_testkit::connections::pat("asana-pat", &api),
        ),
        &[("VAULT_TOKEN", vault.token())],
    );
    serving(&token_vault).await;
    TokenVaultClient::new(channel(&token_vault.url(), Some(&onboarding)).expect("channel"))
        .put_credential(vault_pb::PutCredentialRequest {
            tenant: TENANT.into(),
            connection_name: "asana-pat".into(),
            identifier: "alice".into(),
            token: ALICE_PAT.into(),
            replace_user: false,
        })
        .await
        .expect("the PAT is stored");

    let executor_key_file = key_file(dir.path(), "executor.key", &executor_key);
    let executor = |audit: &str| {
        start(
            "connector-executor",
            &format!(
                "[server]\nreadiness_interval = \"100ms\"\n{}\n[token_vault]\nurl = \"{}\"\napi_key_file = \"{executor_key_file}\"\n\n[limits]\nreads_in_flight = 1000\n\n[connections.asana-pat]\nrequests_per_minute = 1000000000\n\n{audit}",
                caller("agent", &agent, r#"["executor"]"#),
                token_vault.url(),
            ),
            &[],
        )
    };
    let spool = dir.path().join("spool");
    let audited = executor(&format!(
        "[audit]\nurl = \"{}\"\napi_key_file = \"{executor_key_file}\"\nspool_dir = \"{}\"\ndurability = \"{durability}\"\n",
        audit_log.url(),
        spool.display(),
    ));
    let unaudited = executor("");
    let shared = executor(&format!(
        "[limits.shared]\nurl = \"{}\"\nkey_prefix = \"{}\"\n",
        agentauth_testkit::redis::shared_url(),
        agentauth_testkit::redis::fresh_prefix(),
    ));
    let forwarder = start("forwarder", "", &[(UPSTREAM, &api)]);
    for process in [&audit_log, &audited, &unaudited, &shared] {
        serving(process).await;
    }
    listening(&forwarder).await;

    let request = Arc::new(pb::ExecuteToolRequest {
        tenant: TENANT.into(),
        connection_name: "asana-pat".into(),
        identifier: "alice".into(),
        tool_name: "asana_task_get".into(),
        input_json: serde_json::json!({ "task_gid": task }).to_string(),
        options: None,
    });
    let grpc = |process: &ServiceProcess| Path::Grpc {
        client: ConnectorExecutorClient::new(
            channel(&process.url(), Some(&agent)).expect("channel"),
        ),
        request: request.clone(),
    };
    let paths = [
        (
            "(a) direct HTTP",
            Path::Direct {
                http,
                url: task_url,
            },
            None,
        ),
        ("(b) forwarder", grpc(&forwarder), Some(forwarder.pid())),
        (
            "(c) ExecuteTool, audit on",
            grpc(&audited),
            Some(audited.pid()),
        ),
        (
            "(d) ExecuteTool, audit off",
            grpc(&unaudited),
            Some(unaudited.pid()),
        ),
        (
            "(e) ExecuteTool, audit off, limits on Redis",
            grpc(&shared),
            Some(shared.pid()),
        ),
    ];
    let mut results = Vec::new();
    for &concurrency in &CONCURRENCY {
        // Rounds interleave the paths, each round in another order, so that a drift of the
        // machine's load falls on every path alike.
        let mut rounds: Vec<Vec<Round>> = paths.iter().map(|_| Vec::new()).collect();
        for round in 0..ROUNDS {
            for step in 0..paths.len() {
                let index = (step + round) % paths.len();
                let (_, path, server) = &paths[index];
                rounds[index].push(path.round(concurrency, *server).await);
            }
        }
        for ((name, ..), rounds) in paths.iter().zip(rounds) {
            results.push((*name, concurrency, Figures::of(rounds)));
        }
    }
    let audited_calls: u64 = results
        .iter()
        .filter(|(name, ..)| name.starts_with("(c)"))
        .map(|(.., figures)| figures.all_calls)
        .sum();
    report(&results, durability);
    check_audit(&audit_log, &auditor, audited_calls).await;
    ExitCode::SUCCESS
}

fn report(results: &[(&str, usize, Figures)], durability: &str) {
    println!(
        "connector-executor: asana_task_get through ExecuteTool against a minimal forwarder and direct HTTP"
    );
    println!(
        "(every service in its own process on this machine; audit-log on SQLite, durability = {durability}; per row {ROUNDS} rounds of {ROUND:?} after {WARMUP:?} of warm-up, interleaved with the other paths)\n"
    );
    println!(
        "| path | concurrency | calls/s | p50 | p99 | server CPU per call | vs forwarder (calls/s, added p50, CPU) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let cpu_text =
        |cpu: Option<Duration>| cpu.map_or("—".to_owned(), |c| format!("{:.0} µs", micros(c)));
    for &(name, concurrency, figures) in results {
        let forwarder = results
            .iter()
            .find(|(n, c, _)| n.starts_with("(b)") && *c == concurrency)
            .map(|(.., f)| *f);
        let versus = match (
            forwarder,
            name.starts_with("(c)") || name.starts_with("(d)") || name.starts_with("(e)"),
        ) {
            (Some(b), true) => format!(
                "{:.2}x, {:+.0} µs, {}",
                figures.rate / b.rate,
                micros(figures.latencies.p50) - micros(b.latencies.p50),
                match (figures.cpu_per_call, b.cpu_per_call) {
                    (Some(mine), Some(theirs)) if !theirs.is_zero() => {
                        format!("{:.2}x", mine.as_secs_f64() / theirs.as_secs_f64())
                    }
                    _ => "—".to_owned(),
                }
            ),
            _ => "—".to_owned(),
        };
        println!(
            "| {name} | {concurrency} | {:.0} | {:.0} µs | {:.0} µs | {} | {versus} |",
            figures.rate,
            micros(figures.latencies.p50),
            micros(figures.latencies.p99),
            cpu_text(figures.cpu_per_call),
        );
    }
    let at = |prefix: &str, concurrency: usize| {
        results
            .iter()
            .find(|(n, c, _)| n.starts_with(prefix) && *c == concurrency)
            .map(|(.., f)| *f)
            .expect("measured")
    };
    let (b, c, d) = (at("(b)", 64), at("(c)", 64), at("(d)", 64));
    let b1 = at("(b)", 1);
    println!();
    println!(
        "at 64: audit off {:.2}x the forwarder's calls/s (goal ≥ 0.90), audit on {:.2}x (goal ≥ 0.75)",
        d.rate / b.rate,
        c.rate / b.rate
    );
    println!(
        "added p50 at 1: audit off {:+.0} µs, audit on {:+.0} µs (goal ≤ 40 µs)",
        micros(at("(d)", 1).latencies.p50) - micros(b1.latencies.p50),
        micros(at("(c)", 1).latencies.p50) - micros(b1.latencies.p50),
    );
    if let (Some(mine), Some(theirs)) = (d.cpu_per_call, b.cpu_per_call) {
        println!(
            "executor CPU per call at 64, audit off: {:.2}x the forwarder's (goal ≤ 1.3)",
            mine.as_secs_f64() / theirs.as_secs_f64()
        );
    }
    for concurrency in CONCURRENCY {
        let (local, redis) = (at("(d)", concurrency), at("(e)", concurrency));
        println!(
            "limits on Redis vs in process at {concurrency}: {:.2}x calls/s, {:+.0} µs p50, CPU per call {}",
            redis.rate / local.rate,
            micros(redis.latencies.p50) - micros(local.latencies.p50),
            match (redis.cpu_per_call, local.cpu_per_call) {
                (Some(r), Some(l)) if !l.is_zero() =>
                    format!("{:.2}x", r.as_secs_f64() / l.as_secs_f64()),
                _ => "—".to_owned(),
            }
        );
    }
    let a = at("(a)", 64);
    println!("forwarder / direct at 64: {:.2}x", b.rate / a.rate);
}

/// Waits until audit-log's chain for the tenant stops growing or holds `calls` events, and
/// says whether every audited call is in it.
async fn check_audit(audit_log: &ServiceProcess, auditor: &ApiKey, calls: u64) {
    let mut client =
        AuditLogClient::new(channel(&audit_log.url(), Some(auditor)).expect("channel"));
    let mut recorded = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        recorded = client
            .verify_chain(audit_pb::VerifyChainRequest {
                tenant: TENANT.into(),
                ..Default::default()
            })
            .await
            .expect("verify")
            .into_inner()
            .events_checked;
        if recorded >= calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("audit events recorded: {recorded} for {calls} audited calls");
}
